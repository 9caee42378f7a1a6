package emergencykit

import (
	"fmt"
	"image/color"
	"strings"

	"github.com/boombuler/barcode/qr"
)

// quietZone is the blank border a QR code needs around it, in modules (the
// standard asks for four).
const quietZone = 4

// QRCode is the module matrix of one QR code, without its quiet zone.
type QRCode struct {
	Size int
	dark []bool
}

// NewQRCode encodes text at error correction level M (15% of the code may
// be lost: a fold or a stain on the paper), in byte mode for UTF-8 text.
func NewQRCode(text string) (*QRCode, error) {
	code, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		return nil, fmt.Errorf("cannot encode the QR code: %w", err)
	}
	b := code.Bounds()
	q := &QRCode{Size: b.Dx(), dark: make([]bool, b.Dx()*b.Dy())}
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			g := color.Gray16Model.Convert(code.At(b.Min.X+x, b.Min.Y+y)).(color.Gray16)
			q.dark[y*q.Size+x] = g.Y < 0x8000
		}
	}
	return q, nil
}

// Dark reports whether the module at column x, row y is dark; outside the
// code (the quiet zone) it is light.
func (q *QRCode) Dark(x, y int) bool {
	if x < 0 || y < 0 || x >= q.Size || y >= q.Size {
		return false
	}
	return q.dark[y*q.Size+x]
}

// HalfBlocks draws the code with its quiet zone as lines of Unicode half
// blocks, two rows of modules per line: printed (dark ink on light paper)
// it scans like the HTML one. A terminal with light text on a dark
// background shows it inverted, which many phone readers also accept.
func (q *QRCode) HalfBlocks() []string {
	var lines []string
	for y := -quietZone; y < q.Size+quietZone; y += 2 {
		var b strings.Builder
		for x := -quietZone; x < q.Size+quietZone; x++ {
			top, bottom := q.Dark(x, y), q.Dark(x, y+1)
			switch {
			case top && bottom:
				b.WriteRune('█')
			case top:
				b.WriteRune('▀')
			case bottom:
				b.WriteRune('▄')
			default:
				b.WriteRune(' ')
			}
		}
		lines = append(lines, b.String())
	}
	return lines
}

// SVG draws the code with its quiet zone as an SVG image whose user unit is
// one module: a white square and one path of dark runs, one "M x y h n v 1
// h -n z" per horizontal run. mm is its printed width.
func (q *QRCode) SVG(mm int) string {
	side := q.Size + 2*quietZone
	var path strings.Builder
	for y := 0; y < q.Size; y++ {
		for x := 0; x < q.Size; {
			if !q.Dark(x, y) {
				x++
				continue
			}
			n := 1
			for q.Dark(x+n, y) {
				n++
			}
			fmt.Fprintf(&path, "M%d %dh%dv1h-%dz", x+quietZone, y+quietZone, n, n)
			x += n
		}
	}
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%dmm" height="%dmm" viewBox="0 0 %d %d" shape-rendering="crispEdges" role="img" aria-label="QR code of the repository password">`+
		`<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="%s"/></svg>`,
		mm, mm, side, side, side, side, path.String())
}
