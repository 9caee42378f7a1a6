package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The configuration is decoded into a yaml.Node tree and walked by hand, so
// that every message carries the line and the full key path (yaml.v3's own
// strict decoding reports neither the path nor more than one problem).

const (
	tagNull  = "!!null"
	tagStr   = "!!str"
	tagInt   = "!!int"
	tagBool  = "!!bool"
	tagFloat = "!!float"
	tagMerge = "!!merge"
)

// parser collects every problem in one file.
type parser struct {
	file    string
	errs    Errors
	merging map[*yaml.Node]bool   // mappings being expanded by pairs, to refuse "<<" cycles
	merged  map[*yaml.Node][]pair // pairs of mappings already expanded, so chains of merges stay linear
	files   []fileRef             // the files the configuration names, for Load to check
}

// names records a file the configuration names at n (nil for a default).
func (p *parser) names(n *yaml.Node, key, path string, role fileRole) {
	p.files = append(p.files, fileRef{key: key, node: resolve(n), path: path, role: role})
}

// fail records a problem at n (line 1 when n is nil).
func (p *parser) fail(n *yaml.Node, key, what, expected string) {
	line, column := 1, 0
	if n != nil && n.Line > 0 {
		line, column = n.Line, n.Column
	}
	msg := what
	if expected != "" {
		msg += "; expected " + expected
	}
	p.errs.List = append(p.errs.List, &Error{File: p.file, Line: line, Column: column, Key: key, Msg: msg})
}

var wholeNumber = regexp.MustCompile(`^[-+]?[0-9]+$`)

var yamlLine = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)

// document returns the top-level node of the file's single YAML document,
// or nil after recording why there is none.
func (p *parser) document(data []byte) *yaml.Node {
	const expected = "a mapping with the keys repositories, plans and settings"
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.fail(nil, "", "the file is empty", expected)
			return nil
		}
		p.syntax(err)
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		p.fail(&next, "", "a second YAML document starts here", "one document only (remove the \"---\" line and what follows, or merge the documents)")
	case !errors.Is(err, io.EOF):
		p.syntax(err)
	}
	if len(doc.Content) == 0 {
		p.fail(&doc, "", "the file is empty", expected)
		return nil
	}
	top := resolve(doc.Content[0])
	switch {
	case top.Kind == yaml.ScalarNode && top.Tag == tagNull:
		p.fail(top, "", "the file is empty", expected)
		return nil
	case top.Kind != yaml.MappingNode:
		p.fail(top, "", "the top level is "+describe(top), expected)
		return nil
	}
	return top
}

// syntax records a YAML syntax error. yaml.v3 leaves the line out when
// the problem is on the first line.
func (p *parser) syntax(err error) {
	line, msg := 1, strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	expected := "valid YAML"
	if strings.Contains(msg, "cannot start any token") {
		expected += " (quote values that start with @, ` or %, and indent with spaces, not tabs)"
	}
	p.errs.List = append(p.errs.List, &Error{File: p.file, Line: line, Msg: "invalid YAML: " + msg + "; expected " + expected})
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// describe names what a node holds, for "got ..." messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case tagNull:
			return "no value"
		case tagStr:
			return "the string " + strconv.Quote(n.Value)
		case tagInt, tagFloat:
			return "the number " + n.Value
		case tagBool:
			return "the boolean " + n.Value
		}
		return fmt.Sprintf("%s (tagged %s)", n.Value, n.Tag)
	}
	return "an unsupported YAML node"
}

// typeError records that n has the wrong type.
func (p *parser) typeError(n *yaml.Node, key, expected string) {
	if n.Kind == yaml.ScalarNode && n.Tag == tagNull {
		p.fail(n, key, "has no value", expected)
		return
	}
	p.fail(n, key, "got "+describe(n), expected)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// pair is one key and its value in a mapping.
type pair struct {
	name  string
	key   *yaml.Node
	value *yaml.Node
}

// pairs returns the entries of the mapping n in file order, with YAML merge
// keys ("<<: *anchor") expanded: keys written in the mapping itself win
// over merged ones. A duplicate key is refused. It returns ok=false,
// after recording the problem, when n is not a mapping.
func (p *parser) pairs(n *yaml.Node, path, expected string) ([]pair, bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.typeError(n, path, expected)
		return nil, false
	}
	if entries, done := p.merged[n]; done {
		return entries, true
	}
	if p.merging[n] {
		p.fail(n, path, "the mapping merges itself (\"<<\" leads back to it)", "a merge of another mapping")
		return nil, false
	}
	if p.merging == nil {
		p.merging = map[*yaml.Node]bool{}
	}
	p.merging[n] = true
	defer delete(p.merging, n)
	if p.merged == nil {
		p.merged = map[*yaml.Node][]pair{}
	}
	var out []pair
	seen := map[string]*yaml.Node{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == tagMerge {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode || k.Tag == tagNull {
			p.fail(k, path, "a key is "+describe(k), "keys that are plain names")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.fail(k, join(path, k.Value), fmt.Sprintf("duplicate key (first set on line %d)", first.Line), "each key once")
			continue
		}
		seen[k.Value] = k
		out = append(out, pair{name: k.Value, key: k, value: v})
	}
	for _, m := range merges {
		m = resolve(m)
		sources := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			sources = m.Content
		}
		for _, src := range sources {
			merged, ok := p.pairs(src, path, "a mapping to merge (\"<<: *anchor\")")
			if !ok {
				continue
			}
			for _, e := range merged {
				if _, dup := seen[e.name]; dup {
					continue
				}
				seen[e.name] = e.key
				out = append(out, e)
			}
		}
	}
	p.merged[n] = out
	return out, true
}

// mapping is a mapping with a fixed set of keys.
type mapping struct {
	at     *yaml.Node // where a missing key is reported: the key naming this mapping
	path   string
	fields map[string]pair
}

// mapping checks that n is a mapping whose keys are all in known, and
// returns nil after recording the problem when it is not a mapping.
// at is the key naming n (nil at the top level).
func (p *parser) mapping(at, n *yaml.Node, path, expected string, known []string) *mapping {
	entries, ok := p.pairs(n, path, expected)
	if !ok {
		return nil
	}
	if at == nil {
		at = resolve(n)
	}
	m := &mapping{at: at, path: path, fields: map[string]pair{}}
	for _, e := range entries {
		if !slices.Contains(known, e.name) {
			what := "unknown key"
			if s := suggest(e.name, known); s != "" {
				what += fmt.Sprintf(" (did you mean %s?)", s)
			}
			p.fail(e.key, join(path, e.name), what, "one of "+strings.Join(known, ", "))
			continue
		}
		m.fields[e.name] = e
	}
	return m
}

// get returns the entry of key name and its key path.
func (m *mapping) get(name string) (e pair, path string, ok bool) {
	e, ok = m.fields[name]
	return e, join(m.path, name), ok
}

func (p *parser) missing(m *mapping, name, expected string) {
	p.fail(m.at, join(m.path, name), "missing (required)", expected)
}

// str decodes a string. A value YAML reads as a number or boolean is
// refused with a hint to quote it, rather than silently converted.
func (p *parser) str(n *yaml.Node, path, expected string) (string, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == tagStr {
		return n.Value, true
	}
	if n.Kind == yaml.ScalarNode && n.Tag != tagNull {
		p.fail(n, path, "got "+describe(n)+", not a string", expected+` (quote it: "`+n.Value+`")`)
		return "", false
	}
	p.typeError(n, path, expected)
	return "", false
}

// integer decodes a whole number.
func (p *parser) integer(n *yaml.Node, path, expected string) (int, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == tagFloat && wholeNumber.MatchString(n.Value) {
		// YAML reads a whole number too large for 64 bits as a float.
		p.fail(n, path, n.Value+" is out of range", expected)
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != tagInt {
		p.typeError(n, path, expected)
		return 0, false
	}
	var v int
	if err := n.Decode(&v); err != nil {
		p.fail(n, path, n.Value+" is out of range", expected)
		return 0, false
	}
	return v, true
}

// count decodes a whole number that must be at least least.
func (p *parser) count(n *yaml.Node, path string, least int) (int, bool) {
	expected := fmt.Sprintf("a whole number >= %d", least)
	v, ok := p.integer(n, path, expected)
	if !ok {
		return 0, false
	}
	if v < least {
		what := fmt.Sprintf("%d is too small", v)
		if v < 0 {
			what = fmt.Sprintf("%d is negative", v)
		}
		p.fail(resolve(n), path, what, expected)
		return 0, false
	}
	return v, true
}

// boolean decodes true or false (not yes/no/on/off, which YAML 1.2 reads as strings).
func (p *parser) boolean(n *yaml.Node, path string) (bool, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != tagBool {
		p.typeError(n, path, "true or false")
		return false, false
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		p.typeError(n, path, "true or false")
		return false, false
	}
	return v, true
}

// list returns the elements of a sequence.
func (p *parser) list(n *yaml.Node, path, expected string) ([]*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		p.typeError(n, path, expected)
		return nil, false
	}
	return n.Content, true
}

// stringList decodes a list of strings, each checked by check (which returns
// "" when the string is fine, else what is wrong). elem names one element
// in messages.
func (p *parser) stringList(n *yaml.Node, path, expected, elem string, check func(string) string) []string {
	items, ok := p.list(n, path, expected)
	if !ok {
		return nil
	}
	var out []string
	for i, item := range items {
		s, ok := p.str(item, index(path, i), elem)
		if !ok {
			continue
		}
		if check != nil {
			if what := check(s); what != "" {
				p.fail(resolve(item), index(path, i), what, elem)
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

// suggest returns the known key closest to name, if it is close enough to
// be a typo or a shortened key ("password" for "password_file").
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := distance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" && len(name) >= 4 {
		for _, k := range known {
			if strings.HasPrefix(k, name) || strings.HasPrefix(name, k) {
				return k
			}
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
