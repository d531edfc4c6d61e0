package iadvize

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// docs/ names the code it explains (docs/README.md): every function, method,
// type, field, constant or variable of this package that a page cites in
// backticks must exist, so that a rename in the code cannot leave the pages
// pointing at nothing.

// TestDocsNameOnlyDeclaredIdentifiers reads docs/*.md and fails naming, with
// its page and line, each cited name that no production file of the package
// declares.
func TestDocsNameOnlyDeclaredIdentifiers(t *testing.T) {
	declared, imports := packageNames(t)
	pages, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs/*.md to read (%v)", err)
	}
	var missing []string
	cited := 0
	for _, page := range pages {
		for _, c := range citedNames(t, page) {
			if !isPackageIdentifier(c.name, declared, imports) {
				continue
			}
			cited++
			if at := fmt.Sprintf("%s:%d: %s", page, c.line, c.text); !declared[c.name] && !slices.Contains(missing, at) {
				missing = append(missing, at)
			}
		}
	}
	if cited == 0 {
		t.Fatal("docs/ cites no identifier of the package: the test reads nothing")
	}
	if len(missing) > 0 {
		t.Errorf("docs/ cites %d name(s) this package does not declare; rename them in docs/ or in the code:\n\t%s",
			len(missing), strings.Join(missing, "\n\t"))
	}
}

// packageNames parses the package's production files (not its tests) and
// returns every name they declare: funcs, types, consts and vars by name;
// methods and struct fields both as Type.name and as name. imports holds the
// names the files import packages under (logical, framework, sync, ...).
func packageNames(t *testing.T) (declared, imports map[string]bool) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	declared, imports = map[string]bool{}, map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			local := path[strings.LastIndex(path, "/")+1:]
			if imp.Name != nil {
				local = imp.Name.Name
			}
			imports[local] = true
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				declared[d.Name.Name] = true
				if d.Recv != nil && len(d.Recv.List) > 0 {
					declared[receiverType(d.Recv.List[0].Type)+"."+d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						declared[s.Name.Name] = true
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, field := range st.Fields.List {
								for _, n := range field.Names {
									declared[n.Name] = true
									declared[s.Name.Name+"."+n.Name] = true
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							declared[n.Name] = true
						}
					}
				}
			}
		}
	}
	return declared, imports
}

// receiverType is the name of a method's receiver type: T for T, *T, T[P].
func receiverType(e ast.Expr) string {
	for {
		switch x := e.(type) {
		case *ast.StarExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		case *ast.Ident:
			return x.Name
		default:
			return ""
		}
	}
}

// citation is a name a page cites: as written (text), as looked up (name:
// (*T).m and T.m() are T.m), and on which line.
type citation struct {
	text, name string
	line       int
}

var (
	// fencedBlock is a fenced code block (an HCL policy, a shell session): not
	// names of the code.
	fencedBlock = regexp.MustCompile("(?ms)^```.*?^```")
	// codeSpan is an inline code span.
	codeSpan = regexp.MustCompile("`([^`\n]+)`")
	// qualifiedName is a Go identifier, or identifiers joined by dots.
	qualifiedName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$`)
)

// citedNames returns the code spans of page that read as names of code:
// identifiers, possibly qualified ((*T).m, T.m, pkg.Name) and called (name()).
// Paths (creds/), files (login.go), fields of requests (token_url) and prose
// are left out by isPackageIdentifier.
func citedNames(t *testing.T, page string) []citation {
	t.Helper()
	raw, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	text := fencedBlock.ReplaceAllStringFunc(string(raw), func(block string) string {
		return strings.Repeat("\n", strings.Count(block, "\n")) // keep the line numbers
	})
	var out []citation
	for i, line := range strings.Split(text, "\n") {
		for _, m := range codeSpan.FindAllStringSubmatch(line, -1) {
			name := strings.TrimSuffix(strings.TrimSpace(m[1]), "()")
			if strings.HasPrefix(name, "(*") {
				name = strings.Replace(strings.TrimPrefix(name, "(*"), ").", ".", 1)
			}
			if qualifiedName.MatchString(name) && !strings.HasSuffix(name, ".go") {
				out = append(out, citation{text: m[1], name: name, line: i + 1})
			}
		}
	}
	return out
}

// isPackageIdentifier reports whether a cited name is meant as a name of this
// package: a lowerCamelCase word with a capital letter (serveToken, not login,
// nor an exported name of the SDK such as WriteSafeReplicationState), or a
// qualified name whose first part is a type of the package or is written as one
// (storageCache.fill, backend.invalidate, Type.method), not an imported
// package's (logical.ErrReadOnly) nor a host name (api.iadvize.com).
func isPackageIdentifier(name string, declared, imports map[string]bool) bool {
	first, _, qualified := strings.Cut(name, ".")
	hasUpper := func(s string) bool { return strings.ContainsFunc(s, func(r rune) bool { return 'A' <= r && r <= 'Z' }) }
	if !qualified {
		return 'a' <= first[0] && first[0] <= 'z' && hasUpper(first)
	}
	if imports[first] {
		return false
	}
	return declared[first] || hasUpper(first)
}

// TestDocsNameOnlyFilesThatExist: every file name a page cites in backticks
// (`login.go`, `cmd/bench/restart.go`) exists in the repository, so that a file
// moved or merged cannot leave the pages pointing at nothing.
func TestDocsNameOnlyFilesThatExist(t *testing.T) {
	pages, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no pages in docs/: %v", err)
	}
	cited := regexp.MustCompile("`([A-Za-z0-9_./-]+\\.(?:go|sh|md|hcl|yaml))`")
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(text), "\n") {
			for _, m := range cited.FindAllStringSubmatch(line, -1) {
				name := m[1]
				found := false
				for _, dir := range []string{".", "docs"} {
					if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
						found = true
					}
				}
				if !found {
					t.Errorf("%s:%d cites %s, which does not exist", page, i+1, name)
				}
			}
		}
	}
}
