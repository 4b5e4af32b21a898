package users

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Small argon2id parameters keep the tests fast.
func fastArgon(t testing.TB, password string) string {
	t.Helper()
	h, err := hashWith(password, 64, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func fastBcrypt(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func writeFile(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadAndVerify(t *testing.T) {
	b2y := strings.Replace(fastBcrypt(t, "yy-secret"), "$2a$", "$2y$", 1)
	b2b := strings.Replace(fastBcrypt(t, "bb-secret"), "$2a$", "$2b$", 1)
	content := "# users of the submission service\n\n" +
		"alice:" + fastArgon(t, "correct horse") + "\n" +
		"  bob:" + fastBcrypt(t, "battery staple") + "  \n" +
		"# carol is away\n" +
		"Dave@example.com:" + b2y + "\r\n" +
		"erin:" + b2b + "\n"
	db, err := Load(writeFile(t, content))
	if err != nil {
		t.Fatal(err)
	}
	if db.Len() != 4 {
		t.Fatalf("Len = %d, want 4", db.Len())
	}
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"alice", "correct horse", true},
		{"alice", "correct horse ", false},
		{"alice", "", false},
		{"bob", "battery staple", true},
		{"bob", "Battery staple", false},
		{"Dave@example.com", "yy-secret", true},
		{"dave@example.com", "yy-secret", false}, // case-sensitive names
		{"erin", "bb-secret", true},
		{"mallory", "correct horse", false},
		{"mallory", "", false},
		{"", "", false},
		{"alice", strings.Repeat("x", 100), false},
		{"bob", strings.Repeat("x", 100), false},
	} {
		if got := db.Verify(c.user, c.pw); got != c.want {
			t.Errorf("Verify(%q, %q) = %v, want %v", c.user, c.pw, got, c.want)
		}
	}
	if !db.Has("alice") || db.Has("mallory") {
		t.Error("Has is wrong")
	}
}

func TestHash(t *testing.T) {
	h, err := Hash("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("Hash = %q", h)
	}
	hh, err := parseHash(h)
	if err != nil {
		t.Fatalf("parseHash(Hash()) = %v", err)
	}
	if !hh.verify("s3cret") || hh.verify("s3cret!") {
		t.Error("verify of Hash() is wrong")
	}
	if h2, _ := Hash("s3cret"); h2 == h {
		t.Error("Hash is not salted")
	}
	if _, err := Hash(""); err == nil {
		t.Error("Hash accepted an empty password")
	}
}

// The argon2 reference implementation's format: the hash written by
// `echo -n password | argon2 somesalt -id -t 2 -m 16 -p 1`.
func TestArgon2ReferenceFormat(t *testing.T) {
	salt := []byte("somesalt")
	key := argon2.IDKey([]byte("password"), salt, 2, 1<<16, 1, 32)
	h := (&argonHash{memory: 1 << 16, time: 2, threads: 1, salt: salt, key: key}).String()
	want := "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$"
	if !strings.HasPrefix(h, want) {
		t.Fatalf("got %q, want prefix %q", h, want)
	}
	// Value from the reference implementation's test suite (test.c).
	const ref = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
	if h != ref {
		t.Errorf("got %q, want the reference %q", h, ref)
	}
	p, err := parseHash(ref)
	if err != nil || !p.verify("password") {
		t.Errorf("reference hash: err=%v", err)
	}
}

func TestUnknownUserUsesDummy(t *testing.T) {
	// An unknown user must cost a hash computation like a known one: with
	// argon2id t=8 the dummy takes measurable time.
	h, err := hashWith("pw", 8*1024, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	db, err := Load(writeFile(t, "alice:"+h+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if db.dummy.kind() != "argon2id/8192/8/1/32" {
		t.Fatalf("dummy kind = %s", db.dummy.kind())
	}
	measure := func(user string) time.Duration {
		best := time.Hour
		for range 3 {
			start := time.Now()
			db.Verify(user, "wrong")
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := measure("alice"), measure("nobody")
	if unknown < known/3 || unknown > known*3 {
		t.Errorf("known user %v, unknown user %v: timing differs", known, unknown)
	}

	b, err := Load(writeFile(t, "a:"+fastBcrypt(t, "x")+"\nb:"+fastBcrypt(t, "y")+"\nc:"+fastArgon(t, "z")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b.dummy.kind() != "bcrypt/4" {
		t.Errorf("dummy kind = %s, want the majority bcrypt/4", b.dummy.kind())
	}
	if b.Verify("nobody", "x") {
		t.Error("unknown user verified")
	}
}

func TestEmptyDB(t *testing.T) {
	db, err := Load(writeFile(t, "# nobody yet\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if db.Len() != 0 || db.Verify("a", "b") {
		t.Error("empty db")
	}
	var nilDB *DB
	if nilDB.Len() != 0 || nilDB.Verify("a", "b") {
		t.Error("nil db")
	}
}

func TestLoadErrors(t *testing.T) {
	good := fastBcrypt(t, "x")
	argon := fastArgon(t, "x")
	parts := strings.Split(argon, "$")
	for _, c := range []struct {
		name, content string
		want          []string
	}{
		{"no colon", "alice\n", []string{":1: ", `want "user:<hash>"`}},
		{"plaintext", "# c\nalice:secret\n", []string{":2: ", "never in clear"}},
		{"empty hash", "alice:\n", []string{":1: ", "empty hash"}},
		{"empty user", ":" + good + "\n", []string{":1: ", "empty user name"}},
		{"space in user", "al ice:" + good + "\n", []string{":1: ", "white space"}},
		{"md5crypt", "\n\nalice:$1$abc$def\n", []string{":3: ", `unsupported hash format "$1$"`}},
		{"sha512crypt", "alice:$6$abc$def\n", []string{":1: ", `"$6$"`}},
		{"argon2i", "alice:$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n", []string{"use argon2id"}},
		{"bad bcrypt", "alice:$2a$10$tooshort\n", []string{":1: ", "malformed bcrypt"}},
		{"argon version", "alice:" + strings.Replace(argon, "v=19", "v=16", 1) + "\n", []string{":1: ", "version"}},
		{"argon fields", "alice:$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ\n", []string{":1: ", "malformed argon2id"}},
		{"argon param", "alice:$" + strings.Join(append(parts[1:3], "m=64,t=1,x=1", parts[4], parts[5]), "$") + "\n", []string{`unknown parameter "x"`}},
		{"argon memory", "alice:$" + strings.Join(append(parts[1:3], "m=99999999,t=1,p=1", parts[4], parts[5]), "$") + "\n", []string{"m must be"}},
		{"argon salt", "alice:$" + strings.Join(append(parts[1:3], parts[3], "!!", parts[5]), "$") + "\n", []string{"salt"}},
		{"duplicate", "alice:" + good + "\nbob:" + good + "\nalice:" + argon + "\n", []string{":3: ", `duplicate user "alice" (first on line 1)`}},
		{"several", "a\nb\n", []string{":1: ", ":2: "}},
		{"long line", "alice:" + strings.Repeat("x", 5000) + "\n", []string{"longer than"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, c.content)
			_, err := Load(p)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file loaded")
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("alice:$2a$04$" + strings.Repeat("a", 53))
	f.Add("alice:$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("# comment")
	f.Add("")
	f.Add("a:$argon2id$v=19$m=0,t=0,p=0$$")
	f.Add("a:b:c")
	f.Fuzz(func(t *testing.T, line string) {
		user, h, err := parseLine(line)
		if err != nil {
			if h != nil {
				t.Fatal("hasher with error")
			}
			return
		}
		if h == nil {
			return
		}
		if ValidUser(user) != nil {
			t.Fatalf("accepted invalid user %q", user)
		}
		if a, ok := h.(*argonHash); ok {
			if a.memory > maxArgonMemory || a.time > maxArgonTime || a.threads == 0 {
				t.Fatalf("accepted expensive parameters %+v", a)
			}
			// What was accepted must print back in canonical form.
			if _, err := parseHash(a.String()); err != nil {
				t.Fatalf("round trip of %q: %v", a.String(), err)
			}
		}
	})
}
