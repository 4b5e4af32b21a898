package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Error is one problem found in a configuration file. Load, Parse and
// Validate return all problems found, each an *Error, joined with
// errors.Join (one per line).
type Error struct {
	File string // the file name as given to Load or Parse
	Line int    // 1-based; 0 when unknown
	Key  string // key path such as "listeners[1].tls"; empty for the whole file
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
	} else {
		b.WriteString("config")
	}
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// meta is what the loader remembers about the file a Config came from.
type meta struct {
	file  string
	lines map[string]int // key path → line of the key
}

// Line returns the line of the file on which the key path (for example
// "listeners[1].tls") was written, or 0 if it was not written there (a
// default, or a Config not read from a file).
func (c *Config) Line(key string) int {
	if c == nil || c.meta == nil {
		return 0
	}
	return c.meta.lines[key]
}

// Load reads, strictly decodes, completes with defaults and validates the
// configuration file at path. It returns the configuration, warnings (to
// be shown to the administrator; the configuration is usable) and an
// error holding every problem found. On error the configuration is nil.
//
// Relative file names in the configuration (tls.cert, tls.key,
// auth.users_file, upstream.servers[].ca) are relative to the directory of
// the configuration file.
//
// The file may hold secrets: when it is readable by group or others, Load
// warns, or fails if strict_permissions is true. The same check is made for
// auth.users_file and tls.key.
func Load(path string) (*Config, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if fi.IsDir() {
		return nil, nil, &Error{File: path, Msg: "is a directory, want a YAML file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > maxFileSize {
		return nil, nil, &Error{File: path, Msg: fmt.Sprintf("larger than %s; this is not a configuration file", Size(maxFileSize))}
	}
	c, warns, err := Parse(data, path)
	if msg := permProblem(fi); msg != "" {
		e := &Error{File: path, Msg: msg}
		if c != nil && c.StrictPermissions {
			c = nil
			err = errors.Join(e, err)
		} else {
			warns = append([]string{e.Error()}, warns...)
		}
	}
	return c, warns, err
}

// maxFileSize bounds the configuration file.
const maxFileSize = 4 << 20

// permProblem returns why a file holding secrets has unsafe permissions,
// or "".
func permProblem(fi os.FileInfo) string {
	if runtime.GOOS == "windows" {
		return ""
	}
	if m := fi.Mode().Perm(); m&0o044 != 0 {
		return fmt.Sprintf("mode %04o makes it readable by group or others, and it may hold secrets; chmod 600", m)
	}
	return ""
}

// Parse is Load for configuration data already read; filename is used in
// messages and to resolve relative file names. It performs no permission
// check on the configuration itself (Load does).
func Parse(data []byte, filename string) (*Config, []string, error) {
	d := &diag{file: filename, lines: map[string]int{}, bad: map[string]bool{}}
	c := &Config{Path: filename, meta: &meta{file: filename, lines: d.lines}}
	root, ok := d.parseYAML(data)
	if !ok {
		return nil, d.warnings(), d.err()
	}
	if root != nil {
		dec := &decoder{diag: d}
		dec.decode(root, reflect.ValueOf(c).Elem(), "")
	} else {
		d.errorAt(0, "", "the configuration is empty; required keys are missing: hostname, listeners, upstream.servers")
	}
	c.resolvePaths(filepath.Dir(filename))
	c.ApplyDefaults()
	c.validate(d)
	if err := d.err(); err != nil {
		return nil, d.warnings(), err
	}
	return c, d.warnings(), nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): `)

// parseYAML parses data into its root node, nil for an empty document.
// ok is false after syntax errors.
func (d *diag) parseYAML(data []byte) (root *yaml.Node, ok bool) {
	defer func() {
		// yaml.v3 is not supposed to panic on any input; never let a
		// configuration file crash the gateway if it does.
		if r := recover(); r != nil {
			d.errorAt(0, "", "cannot parse YAML: %v", r)
			root, ok = nil, false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, true
		}
		d.yamlError(err)
		return nil, false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			d.yamlError(err)
		} else {
			d.errorAt(extra.Line, "", "a second YAML document (---) is not allowed; put everything in one")
		}
		return nil, false
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, true
		}
		return doc.Content[0], true
	}
	return &doc, true
}

func (d *diag) yamlError(err error) {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	d.errorAt(line, "", "YAML syntax error: %s", msg)
}

// diag collects the errors and warnings of one load.
type diag struct {
	file  string
	lines map[string]int  // key path → line
	bad   map[string]bool // key paths that failed to decode
	errs  []*Error
	warns []*Error
}

// line returns the line of key, or of its nearest ancestor that was
// written in the file, or 0.
func (d *diag) line(key string) int {
	for k := key; ; k = parentKey(k) {
		if l, ok := d.lines[k]; ok {
			return l
		}
		if k == "" {
			return 0
		}
	}
}

// parentKey returns the parent of a key path: "a.b[2]" → "a.b" → "a" → "".
func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i < 0 {
		return ""
	}
	return k[:i]
}

// suppressed reports whether key, or one of its ancestors, failed to
// decode: validating it again would only repeat that error in other words.
func (d *diag) suppressed(key string) bool {
	for k := key; k != ""; k = parentKey(k) {
		if d.bad[k] {
			return true
		}
	}
	return false
}

func (d *diag) errorAt(line int, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// errorf reports an invalid value of key, at the line where it was written.
func (d *diag) errorf(key, format string, args ...any) {
	if d.suppressed(key) {
		return
	}
	d.errorAt(d.line(key), key, format, args...)
}

// warnf reports a legal but dubious value of key.
func (d *diag) warnf(key, format string, args ...any) {
	d.warns = append(d.warns, &Error{File: d.file, Line: d.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (d *diag) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	sort.SliceStable(d.errs, func(i, j int) bool { return lineOrder(d.errs[i].Line) < lineOrder(d.errs[j].Line) })
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// lineOrder sorts problems without a line (missing keys) after the others.
func lineOrder(l int) int {
	if l == 0 {
		return int(^uint(0) >> 1)
	}
	return l
}

func (d *diag) warnings() []string {
	sort.SliceStable(d.warns, func(i, j int) bool { return lineOrder(d.warns[i].Line) < lineOrder(d.warns[j].Line) })
	var out []string
	for _, w := range d.warns {
		out = append(out, w.Error())
	}
	return out
}

// decoder decodes a yaml.Node tree into the configuration structs,
// strictly: every key must be a field (by its yaml tag) and every value
// must have the field's type. It records the line of every key path.
type decoder struct {
	*diag
	budget     int  // nodes visited; bounds work on hostile alias graphs
	tooComplex bool // reported that budget or merge depth ran out
}

const maxMergeDepth = 20

const maxNodes = 1 << 20

// decodeErr reports a value that could not be decoded and marks its key
// path so that validation does not report it again.
func (d *decoder) decodeErr(line int, key, format string, args ...any) {
	d.bad[key] = true
	d.errorAt(line, key, format, args...)
}

// resolve follows aliases.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > 100 {
			return nil
		}
		n = n.Alias
	}
	return n
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// decode decodes n into v (addressable), at key path key.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string) {
	d.budget++
	if d.budget > maxNodes {
		if !d.tooComplex {
			d.tooComplex = true
			d.decodeErr(n.Line, key, "the document is too large or has too many aliases")
		}
		return
	}
	line := n.Line
	n = d.resolve(n)
	if n == nil {
		d.decodeErr(line, key, "alias cannot be resolved")
		return
	}
	if isNull(n) {
		// "key:" with no value, or null: keep the zero value (default),
		// except that an empty filter block ("rdns:") enables the filter.
		if v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return
	}
	if v.Addr().Type().Implements(unmarshalerType) {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			d.decodeErr(line, key, "%s", err.Error())
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if sc, ok := v.Addr().Interface().(scalarShorthand); ok && n.Kind == yaml.ScalarNode {
			sc.fromScalar(n.Value)
			return
		}
		d.decodeStruct(n, v, key)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.decodeErr(line, key, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			k := key + "[" + strconv.Itoa(i) + "]"
			d.lines[k] = item.Line
			d.decode(item, s.Index(i), k)
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.decode(n, p.Elem(), key)
		v.Set(p)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag == "!!binary" {
			d.decodeErr(line, key, "want a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, ok := parseBool(n)
		if !ok {
			d.decodeErr(line, key, "want true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Float32, reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&f) != nil {
			d.decodeErr(line, key, "want a number, got %s", describe(n))
			return
		}
		v.SetFloat(f)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil {
			d.decodeErr(line, key, "want an integer, got %s", describe(n))
			return
		}
		if v.OverflowInt(i) {
			d.decodeErr(line, key, "%s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	default:
		d.decodeErr(line, key, "internal error: cannot decode into %s", v.Type())
	}
}

func parseBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode {
		return false, false
	}
	switch strings.ToLower(n.Value) {
	case "true", "yes", "on":
		return true, n.Tag == "!!bool" || n.Tag == "!!str" && n.Style == 0
	case "false", "no", "off":
		return false, n.Tag == "!!bool" || n.Tag == "!!str" && n.Style == 0
	}
	return false, false
}

// fieldsOf maps the yaml key names of a struct type to field indexes.
var fieldCache sync.Map // reflect.Type → map[string]int

func fieldsOf(t reflect.Type) map[string]int {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]int)
	}
	m := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	fieldCache.Store(t, m)
	return m
}

type pair struct{ k, v *yaml.Node }

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		if key == "" {
			d.decodeErr(n.Line, key, "want a mapping of settings (key: value), got %s", describe(n))
		} else {
			d.decodeErr(n.Line, key, "want a mapping (key: value), got %s", describe(n))
		}
		return
	}
	fields := fieldsOf(v.Type())
	for _, p := range d.pairs(n, key, true, 0) {
		name := p.k.Value
		k := name
		if key != "" {
			k = key + "." + name
		}
		i, ok := fields[name]
		if !ok {
			msg := "unknown key"
			if s := suggest(name, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.decodeErr(p.k.Line, k, "%s", msg)
			continue
		}
		d.lines[k] = p.k.Line
		d.decode(p.v, v.Field(i), k)
	}
}

// pairs returns the key/value pairs of a mapping in order, with YAML merge
// keys (<<: *anchor) expanded: keys written explicitly win over merged
// ones, and earlier merged mappings win over later ones. Duplicate
// explicit keys are reported when report is set.
func (d *decoder) pairs(n *yaml.Node, key string, report bool, depth int) []pair {
	var out, merged []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		d.budget++
		if d.budget > maxNodes || depth > maxMergeDepth {
			if !d.tooComplex {
				d.tooComplex = true
				d.decodeErr(n.Line, key, "merge keys (<<) and aliases are nested too deeply or expand to too much")
			}
			return out
		}
		kn, vn := n.Content[i], n.Content[i+1]
		kn2 := d.resolve(kn)
		if kn2 == nil || kn2.Kind != yaml.ScalarNode {
			if report {
				d.decodeErr(kn.Line, key, "keys must be plain names, got %s", describe(kn))
			}
			continue
		}
		if kn2.Tag == "!!merge" {
			src := d.resolve(vn)
			var srcs []*yaml.Node
			switch {
			case src != nil && src.Kind == yaml.MappingNode:
				srcs = []*yaml.Node{src}
			case src != nil && src.Kind == yaml.SequenceNode:
				for _, s := range src.Content {
					if s = d.resolve(s); s != nil && s.Kind == yaml.MappingNode {
						srcs = append(srcs, s)
					} else if report {
						d.decodeErr(kn.Line, key, "merge key (<<) wants a mapping or a list of mappings")
					}
				}
			default:
				if report {
					d.decodeErr(kn.Line, key, "merge key (<<) wants a mapping or a list of mappings")
				}
			}
			for _, s := range srcs {
				merged = append(merged, d.pairs(s, key, false, depth+1)...)
			}
			continue
		}
		name := kn2.Value
		if first, dup := seen[name]; dup {
			if report {
				k := name
				if key != "" {
					k = key + "." + name
				}
				// Not marked bad: the first value is decoded and validated.
				d.errorAt(kn.Line, k, "duplicate key (first written on line %d)", first)
			}
			continue
		}
		seen[name] = kn.Line
		out = append(out, pair{kn2, vn})
	}
	for _, p := range merged {
		if _, dup := seen[p.k.Value]; !dup {
			seen[p.k.Value] = p.k.Line
			out = append(out, p)
		}
	}
	return out
}

// suggest returns the known key closest to an unknown one, if it is close
// enough to be a typo.
func suggest(name string, fields map[string]int) string {
	if len(name) > 40 {
		return ""
	}
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, f := range names {
		if dist := editDistance(strings.ToLower(name), f); dist < bestD {
			best, bestD = f, dist
		}
	}
	if best == "" || bestD*3 > len(name) {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// resolvePaths makes the file names in the configuration relative to dir.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.TLS.Cert)
	abs(&c.TLS.Key)
	abs(&c.Auth.UsersFile)
	for i := range c.Upstream.Servers {
		abs(&c.Upstream.Servers[i].CA)
	}
	if p, ok := strings.CutPrefix(c.State.Store, storeFile); ok && p != "" && !filepath.IsAbs(p) {
		c.State.Store = storeFile + filepath.Join(dir, p)
	}
}

// scalarShorthand is a mapping that may also be written as a plain
// scalar: a DNS list zone as "multi.surbl.org" for {zone: multi.surbl.org}.
type scalarShorthand interface{ fromScalar(string) }
