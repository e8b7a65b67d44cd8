// Command dockerfile-lint checks a Dockerfile the way `docker build --check` does, offline: BuildKit's own parser,
// instructions and lint rules (dockerfile2llb.DockerfileLint), with base images answered locally instead of by a
// registry. It adds what BuildKit skips without a daemon or when .dockerignore re-includes paths: every COPY or
// ADD source from the build context must exist there and survive .dockerignore.
//
// Usage: dockerfile-lint [-context DIR] [-json] [Dockerfile]
//
// It prints each warning as `file:line RuleName: message` and exits 1 when there is any. With -json it prints
// the warnings, every stage's COPY instructions and the final image's config (user, entrypoint, env, workdir) as
// BuildKit computes them, for tests that check what a linter cannot.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

type warning struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
	Line    int    `json:"line"`
	URL     string `json:"url,omitempty"`
}

type copyInstruction struct {
	Stage   string   `json:"stage"`
	From    string   `json:"from,omitempty"`
	Sources []string `json:"sources"`
	Dest    string   `json:"dest"`
	Workdir string   `json:"workdir"`
	Line    int      `json:"line"`
}

type imageConfig struct {
	User       string   `json:"user"`
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workingDir"`
}

type report struct {
	Warnings []warning         `json:"warnings"`
	Error    string            `json:"error,omitempty"`
	Copies   []copyInstruction `json:"copies"`
	Image    *imageConfig      `json:"image,omitempty"`
}

func main() {
	contextDir := flag.String("context", ".", "the build context: COPY sources are looked up there, through its .dockerignore")
	asJSON := flag.Bool("json", false, "print warnings, COPY instructions and the final image config as JSON")
	flag.Parse()
	file := flag.Arg(0)
	if file == "" {
		file = filepath.Join(*contextDir, "Dockerfile")
	}
	dt, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	r, err := check(context.Background(), file, dt, *contextDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *asJSON {
		out, _ := json.MarshalIndent(r, "", "  ")
		fmt.Println(string(out))
	} else {
		for _, w := range r.Warnings {
			fmt.Printf("%s:%d %s: %s\n", file, w.Line, w.Rule, w.Message)
		}
		if r.Error != "" {
			fmt.Printf("%s: %s\n", file, r.Error)
		}
	}
	if len(r.Warnings) > 0 || r.Error != "" {
		os.Exit(1)
	}
}

func check(ctx context.Context, file string, dt []byte, contextDir string) (*report, error) {
	platform := ocispecs.Platform{OS: "linux", Architecture: runtime.GOARCH}
	src := llb.Local("dockerfile")
	def, err := src.Marshal(ctx)
	if err != nil {
		return nil, err
	}
	sourceMap := llb.NewSourceMap(&src, file, "Dockerfile", dt)
	sourceMap.Definition = def
	opt := dockerfile2llb.ConvertOpt{
		Config:         dockerui.Config{BuildPlatforms: []ocispecs.Platform{platform}},
		SourceMap:      sourceMap,
		TargetPlatform: &platform,
		MetaResolver:   offlineImages{},
	}
	results, err := dockerfile2llb.DockerfileLint(ctx, dt, opt)
	if err != nil {
		return nil, err
	}
	r := &report{Warnings: []warning{}, Copies: []copyInstruction{}}
	for _, w := range results.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		r.Warnings = append(r.Warnings, warning{Rule: w.RuleName, Message: w.Detail, Line: line, URL: w.URL})
	}
	if results.Error != nil {
		r.Error = results.Error.Message
		return r, nil
	}

	ast, err := parser.Parse(strings.NewReader(string(dt)))
	if err != nil {
		return nil, err
	}
	stages, _, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return nil, err
	}
	ignore, err := dockerignore(contextDir)
	if err != nil {
		return nil, err
	}
	for i, stage := range stages {
		name := stage.Name
		if name == "" {
			name = fmt.Sprint(i)
		}
		workdir := "/"
		for _, cmd := range stage.Commands {
			switch c := cmd.(type) {
			case *instructions.WorkdirCommand:
				workdir = resolvePath(workdir, c.Path)
			case *instructions.CopyCommand:
				line := c.Location()[0].Start.Line
				r.Copies = append(r.Copies, copyInstruction{
					Stage: name, From: c.From, Sources: c.SourcePaths, Dest: c.DestPath, Workdir: workdir, Line: line,
				})
				if c.From == "" {
					for _, src := range c.SourcePaths {
						if msg := contextSourceProblem(contextDir, ignore, src); msg != "" {
							r.Warnings = append(r.Warnings, warning{Rule: "CopySourceNotInContext", Message: msg, Line: line})
						}
					}
				}
			case *instructions.AddCommand:
				line := c.Location()[0].Start.Line
				for _, src := range c.SourcePaths {
					if msg := contextSourceProblem(contextDir, ignore, src); msg != "" {
						r.Warnings = append(r.Warnings, warning{Rule: "CopySourceNotInContext", Message: msg, Line: line})
					}
				}
			}
		}
	}

	sort.SliceStable(r.Warnings, func(i, j int) bool { return r.Warnings[i].Line < r.Warnings[j].Line })

	// The final image's config as the build computes it (base image config, then the last stage's instructions).
	built, err := dockerfile2llb.Dockerfile2LLB(ctx, dt, opt)
	if err != nil {
		return nil, err
	}
	c := built.Image.Config
	r.Image = &imageConfig{User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir}
	return r, nil
}

func resolvePath(workdir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(workdir, p)
}

func dockerignore(contextDir string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(contextDir, ".dockerignore"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, err
	}
	return patternmatcher.New(patterns)
}

// contextSourceProblem says why a COPY source would be missing from the context BuildKit sends: it does not
// exist, or .dockerignore leaves none of it (the file, or every file under the directory). A glob must match
// something that is sent.
func contextSourceProblem(contextDir string, ignore *patternmatcher.PatternMatcher, src string) string {
	src = filepath.Clean(strings.TrimPrefix(src, "/"))
	matches, err := filepath.Glob(filepath.Join(contextDir, src))
	if err != nil || len(matches) == 0 {
		return fmt.Sprintf("%q does not exist in the build context", src)
	}
	for _, m := range matches {
		sent := false
		_ = filepath.WalkDir(m, func(path string, d fs.DirEntry, err error) error {
			if err != nil || sent {
				return filepath.SkipAll
			}
			rel, _ := filepath.Rel(contextDir, path)
			excluded := false
			if ignore != nil {
				excluded, _ = ignore.MatchesOrParentMatches(filepath.ToSlash(rel))
			}
			switch {
			case !d.IsDir() && !excluded:
				sent = true
			case d.IsDir() && excluded && !ignore.Exclusions():
				return filepath.SkipDir // nothing under it can be re-included
			}
			return nil
		})
		if sent {
			return ""
		}
	}
	return fmt.Sprintf("%q is excluded by .dockerignore", src)
}

// offlineImages answers BuildKit's base image lookups without a registry: every image is a one-layer image for
// the requested platform with the conventional PATH, which is what the lint rules read.
type offlineImages struct{}

func (offlineImages) ResolveImageConfig(_ context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	platform := ocispecs.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if opt.ImageOpt != nil && opt.ImageOpt.Platform != nil {
		platform = *opt.ImageOpt.Platform
	}
	img := ocispecs.Image{
		Platform: platform,
		Config:   ocispecs.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		RootFS:   ocispecs.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromString(ref)}},
	}
	dt, err := json.Marshal(img)
	return ref, "", dt, err
}
