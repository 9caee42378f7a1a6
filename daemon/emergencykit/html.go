package emergencykit

import (
	"html/template"
	"io"
	"strings"
	"time"
)

// qrMillimetres is the printed width of the QR code: large enough for any
// phone camera at arm's length, small enough to leave the page to the text.
const qrMillimetres = 38

// WriteHTML writes the kit as one self-contained HTML page (no external
// file, font or script) laid out to print on one or two A4 pages: @page
// size A4, commands in monospace that wrap instead of running off the page,
// a repository never split across a page break when it fits on one.
func (k *Kit) WriteHTML(w io.Writer) error {
	type planView struct {
		Plan
		Commands []string
		Opened   bool
	}
	type repoView struct {
		Repository
		Number   int
		QRSVG    template.HTML
		Open     []string
		PlanList string
		Plans    []planView
	}
	view := struct {
		*Kit
		Title     string
		Made      string
		GetRestic [][2]string
		Repos     []repoView
		Notes     []string
		NotesNum  int
		Prefix    string
	}{Kit: k, Title: k.Title(), Made: k.Made.Format("2006-01-02 15:04 MST"), GetRestic: getRestic(),
		Notes: restoreNotes(), NotesNum: len(k.Repositories) + 2, Prefix: strings.TrimSpace(CommandPrefix)}
	for i, r := range k.Repositories {
		rv := repoView{Repository: r, Number: i + 2, Open: k.OpenCommands(r), PlanList: planNames(r.Plans)}
		if r.QR != nil {
			// The SVG is made here of numbers only: no caller text in it.
			rv.QRSVG = template.HTML(r.QR.SVG(qrMillimetres)) //nolint:gosec // generated markup, no input
		}
		for _, p := range r.Plans {
			rv.Plans = append(rv.Plans, planView{Plan: p, Commands: k.PlanCommands(r, p), Opened: r.Opened})
		}
		view.Repos = append(view.Repos, rv)
	}
	return kitHTML.Execute(w, view)
}

var kitHTML = template.Must(template.New("kit").Funcs(template.FuncMap{
	"join":  strings.Join,
	"local": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04") },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
@page { size: A4; margin: 14mm 14mm 14mm 16mm; }
html { font: 10pt/1.35 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #000; background: #fff; }
body { max-width: 180mm; margin: 0 auto; }
h1 { font-size: 15pt; margin: 0 0 2mm; }
h2 { font-size: 11.5pt; margin: 4mm 0 1.5mm; border-bottom: 0.3mm solid #000; }
h3 { font-size: 10pt; margin: 2.5mm 0 1mm; }
p, ul { margin: 1mm 0; }
ul { padding-left: 5mm; }
.warning { border: 0.6mm solid #000; padding: 1.5mm 3mm; font-weight: bold; }
.secret { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 11pt; font-weight: bold;
  word-break: break-all; background: #eee; padding: 0 1mm; }
.tag { font-size: 7.5pt; font-weight: bold; border: 0.3mm solid #000; padding: 0 1mm; margin-left: 1mm; vertical-align: middle; }
pre { font: 9pt/1.3 "DejaVu Sans Mono", "Liberation Mono", monospace; margin: 1mm 0 1.5mm; padding: 1.5mm 2mm;
  border-left: 0.8mm solid #000; white-space: pre-wrap; word-break: break-all; }
.prompt { color: #555; user-select: none; }
.repo, .keep { break-inside: avoid; page-break-inside: avoid; }
.qr { float: right; margin: 0 0 2mm 4mm; text-align: center; font-size: 8pt; }
.qr svg { display: block; }
.qrnote { display: block; width: 38mm; font-size: 7pt; text-align: left; }
.small { font-size: 8.5pt; }
.clear { clear: both; }
@media print {
  body { max-width: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  pre, .qr { break-inside: avoid; page-break-inside: avoid; }
}
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="warning">SECRET. This page opens the backups of {{.Host}} listed below, with no subvault and no other file.
Print it, keep the paper away from this machine (a drawer at home, a safe, a person you trust), and delete the file.</p>
<p class="small">Made by subvault {{.SubvaultVersion}} on {{.Made}} from {{.ConfigFile}}.
The archives were written by {{.Restic}}; any restic as new or newer reads them.</p>

<h2>1. Get restic (on any Linux machine: a live USB will do)</h2>
<ul>
{{- range .GetRestic}}
<li>{{index . 0}}: <code>{{index . 1}}</code></li>
{{- end}}
</ul>
{{range .Repos}}
<div class="repo">
<h2>{{.Number}}. Repository {{.Name}} <span class="small">(plans: {{.PlanList}})</span></h2>
{{- if .QR}}
<div class="qr">{{.QRSVG}}password{{if .QRNote}}<br><span class="qrnote">{{.QRNote}}</span>{{end}}</div>
{{- end}}
<p>Location{{if .URLHasCredentials}}<span class="tag">SECRET</span>{{end}}: <span class="secret">{{.URL}}</span></p>
{{- if .Password}}
<p>Password<span class="tag">SECRET</span>: <span class="secret">{{.Password}}</span></p>
<p class="small">subvault reads it from {{.PasswordSource}}.</p>
{{- else}}
<p><strong>Password: not in this kit.</strong> It is kept in {{.PasswordSource}}. It could not be read: {{.PasswordProblem}}.
Write it here by hand: ______________________________</p>
{{- end}}
{{- if .EnvFile}}
{{- if .EnvProblem}}
<p><strong>Backend keys: not in this kit.</strong> They are kept in env_file {{.EnvFile}}, which could not be read: {{.EnvProblem}}</p>
{{- else}}
<p>Backend keys<span class="tag">SECRET</span>: {{len .Env}} from env_file {{.EnvFile}}, in the commands below.</p>
{{- end}}
{{- end}}
<p class="small">{{.Checked}}</p>
{{- range .Files}}
{{- if .Problem}}
<p><strong>{{.Key}} {{.Path}}: not in this kit.</strong> It could not be read: {{.Problem}}</p>
{{- else}}
<p>{{.Key}} {{.Path}}{{if .Secret}}<span class="tag">SECRET</span>{{end}}: written back at the same path by the commands below.</p>
{{- end}}
{{- end}}
{{- range .Notes}}
<p class="small">Note: {{.}}</p>
{{- end}}
<h3>Open the repository; at <code>read</code>, type the password and press Enter</h3>
<pre>{{range .Open}}<span class="prompt">{{$.Prefix}} </span>{{.}}
{{end}}</pre>
{{- range .Plans}}
<h3>Plan {{.Name}}: {{join .Subvolumes ", "}}</h3>
{{- if .Latest}}
<p class="small">{{.Archives}} archives; the latest when this kit was made: {{.Latest.ShortID}} of {{local .Latest.Time}}.</p>
{{- else if .Opened}}
<p class="small">No archive yet when this kit was made.</p>
{{- end}}
<pre>{{range .Commands}}<span class="prompt">{{$.Prefix}} </span>{{.}}
{{end}}</pre>
{{- end}}
<div class="clear"></div>
</div>
{{end}}
<div class="keep">
<h2>{{.NotesNum}}. Notes</h2>
<ul class="small">
{{- range .Notes}}
<li>{{.}}</li>
{{- end}}
</ul>
</div>
</body>
</html>
`))
