// Package users is the SMTP AUTH credential store: a file of
// "user:<hash>" lines (SPEC §3 auth.users_file).
//
// File format, one entry per line:
//
//	# comment
//	alice:$argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash>
//	bob:$2b$12$<bcrypt salt and hash>
//
// Blank lines and lines starting with '#' are ignored; leading and trailing
// white space is trimmed. Hashes are bcrypt ($2a$, $2b$, $2y$) or argon2id
// in the PHC string format with unpadded standard base64 salt and hash, as
// written by the argon2 reference implementation and by Hash. Passwords are
// never stored in clear or in a reversible form, which is why mechanisms
// such as CRAM-MD5 cannot be offered.
//
// User names are compared exactly as written (case-sensitively, no
// normalisation); they may not be empty or contain white space, control
// characters or ':'.
package users

import (
	"bufio"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2id parameters used by Hash (RFC 9106 §4 second recommendation,
// with 2 lanes).
const (
	HashMemory  = 64 * 1024 // KiB
	HashTime    = 3
	HashThreads = 2
	hashSaltLen = 16
	hashKeyLen  = 32
)

// Limits on argon2id parameters accepted from a users file, so that one
// entry cannot make each login attempt take gigabytes or minutes.
const (
	maxArgonMemory  = 1 << 20 // KiB (1 GiB)
	maxArgonTime    = 64
	maxArgonThreads = 255
	maxLineLen      = 4096
)

// DB is a loaded users file. It is safe for concurrent use.
type DB struct {
	users map[string]hasher
	// dummy is verified for unknown users so that a login attempt takes
	// the same time whether or not the user exists.
	dummy hasher
	// sem bounds concurrent hash computations: argon2id takes its memory
	// parameter (64 MiB by default) per attempt.
	sem chan struct{}
}

// hasher is one parsed password hash.
type hasher interface {
	verify(password string) bool
	// kind identifies the algorithm and cost, to pick a typical dummy.
	kind() string
}

// Load reads a users file. Errors name the file and line; a duplicate
// user is an error. A file without entries loads as an empty DB.
func Load(path string) (*DB, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	db := &DB{users: map[string]hasher{}}
	firstLine := map[string]int{}
	var errs []error
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1024), maxLineLen)
	n := 0
	for sc.Scan() {
		n++
		user, h, err := parseLine(sc.Text())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", path, n, err))
			continue
		}
		if h == nil {
			continue
		}
		if first, dup := firstLine[user]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: duplicate user %q (first on line %d)", path, n, user, first))
			continue
		}
		firstLine[user] = n
		db.users[user] = h
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line longer than %d bytes", maxLineLen)
		}
		errs = append(errs, fmt.Errorf("%s:%d: %w", path, n+1, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := db.prepare(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return db, nil
}

// prepare prepares the dummy hash and the concurrency limit.
func (db *DB) prepare() error {
	// The dummy has the kind and cost of the most common entry, so that
	// an unknown user costs what a typical known user does.
	count := map[string]int{}
	var typical hasher
	for _, h := range db.users {
		count[h.kind()]++
	}
	best := 0
	for _, h := range db.users {
		if c := count[h.kind()]; c > best || c == best && h.kind() < typical.kind() {
			typical, best = h, c
		}
	}
	var err error
	db.dummy, err = dummyLike(typical)
	if err != nil {
		return err
	}
	db.sem = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
	return nil
}

// dummyLike returns a hash of a random password with the parameters of h
// (argon2id with Hash's parameters when h is nil).
func dummyLike(h hasher) (hasher, error) {
	switch h := h.(type) {
	case *bcryptHash:
		var pw [32]byte
		rand.Read(pw[:])
		b, err := bcrypt.GenerateFromPassword([]byte(base64.RawStdEncoding.EncodeToString(pw[:])), h.cost)
		if err != nil {
			return nil, err
		}
		return &bcryptHash{hash: b, cost: h.cost}, nil
	case *argonHash:
		d := *h
		d.salt = randBytes(len(h.salt))
		d.key = randBytes(len(h.key))
		return &d, nil
	}
	return &argonHash{memory: HashMemory, time: HashTime, threads: HashThreads,
		salt: randBytes(hashSaltLen), key: randBytes(hashKeyLen)}, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Len returns the number of users.
func (db *DB) Len() int {
	if db == nil {
		return 0
	}
	return len(db.users)
}

// Has reports whether the user exists. It is not timing-safe; use it for
// administration, never to answer a client.
func (db *DB) Has(user string) bool {
	if db == nil {
		return false
	}
	_, ok := db.users[user]
	return ok
}

// Verify reports whether password is the user's password. It takes the
// same time whether or not the user exists: for an unknown user it checks
// against a dummy hash of the typical kind and cost. An empty password
// never matches. At most max(2, GOMAXPROCS) verifications run at once;
// others wait.
func (db *DB) Verify(user, password string) bool {
	if db == nil {
		return false
	}
	h, ok := db.users[user]
	if !ok {
		h = db.dummy
	}
	if db.sem != nil {
		db.sem <- struct{}{}
		defer func() { <-db.sem }()
	}
	match := h != nil && h.verify(password)
	return ok && match && password != ""
}

// Hash returns an argon2id hash of password in PHC string format, for a
// users file line "user:<hash>".
func Hash(password string) (string, error) {
	return hashWith(password, HashMemory, HashTime, HashThreads)
}

func hashWith(password string, memory uint32, time uint32, threads uint8) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	salt := make([]byte, hashSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	h := &argonHash{memory: memory, time: time, threads: threads, salt: salt}
	h.key = argon2.IDKey([]byte(password), salt, time, memory, threads, hashKeyLen)
	return h.String(), nil
}

// ValidUser reports why name cannot be a user name, or nil.
func ValidUser(name string) error {
	if name == "" {
		return errors.New("empty user name")
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("user name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("user name %q contains white space, a control character or ':'", name)
		}
	}
	return nil
}

// parseLine parses one line of a users file. It returns a nil hasher and
// no error for blank and comment lines.
func parseLine(line string) (string, hasher, error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil, nil
	}
	user, hash, ok := strings.Cut(line, ":")
	if !ok {
		return "", nil, errors.New(`want "user:<hash>"`)
	}
	if err := ValidUser(user); err != nil {
		return "", nil, err
	}
	h, err := parseHash(hash)
	if err != nil {
		return "", nil, fmt.Errorf("user %q: %w", user, err)
	}
	return user, h, nil
}

// parseHash parses a bcrypt or argon2id hash.
func parseHash(s string) (hasher, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		cost, err := bcrypt.Cost([]byte(s))
		if err != nil || len(s) != 60 {
			return nil, errors.New("malformed bcrypt hash")
		}
		return &bcryptHash{hash: []byte(s), cost: cost}, nil
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	case strings.HasPrefix(s, "$argon2i$"), strings.HasPrefix(s, "$argon2d$"):
		return nil, errors.New("argon2i and argon2d hashes are not supported; use argon2id")
	case s == "":
		return nil, errors.New("empty hash")
	case !strings.HasPrefix(s, "$"):
		return nil, errors.New("hash is not in a known format; passwords must be stored hashed (bcrypt or argon2id), never in clear")
	}
	id, _, _ := strings.Cut(s[1:], "$")
	if len(id) > 20 {
		id = id[:20]
	}
	return nil, fmt.Errorf("unsupported hash format %q (want bcrypt $2a$/$2b$/$2y$ or $argon2id$)", "$"+id+"$")
}

type bcryptHash struct {
	hash []byte
	cost int
}

func (h *bcryptHash) verify(password string) bool {
	return bcrypt.CompareHashAndPassword(h.hash, []byte(password)) == nil
}

func (h *bcryptHash) kind() string { return "bcrypt/" + strconv.Itoa(h.cost) }

type argonHash struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func (h *argonHash) verify(password string) bool {
	k := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(k, h.key) == 1
}

func (h *argonHash) kind() string {
	return fmt.Sprintf("argon2id/%d/%d/%d/%d", h.memory, h.time, h.threads, len(h.key))
}

func (h *argonHash) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, h.memory, h.time, h.threads,
		base64.RawStdEncoding.EncodeToString(h.salt), base64.RawStdEncoding.EncodeToString(h.key))
}

// parseArgon2id parses "$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>".
func parseArgon2id(s string) (*argonHash, error) {
	bad := func(why string) error { return fmt.Errorf("malformed argon2id hash: %s", why) }
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 {
		return nil, bad(`want "$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>"`)
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, bad(fmt.Sprintf("version %q is not supported (want v=%d)", parts[2], argon2.Version))
	}
	h := &argonHash{}
	seen := map[string]bool{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || seen[k] || v == "" || (len(v) > 1 && v[0] == '0') || strings.TrimLeft(v, "0123456789") != "" {
			return nil, bad(fmt.Sprintf("bad parameter %q", kv))
		}
		seen[k] = true
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, bad(fmt.Sprintf("bad parameter %q", kv))
		}
		switch k {
		case "m":
			h.memory = uint32(n)
		case "t":
			h.time = uint32(n)
		case "p":
			if n > maxArgonThreads {
				return nil, bad(fmt.Sprintf("p=%d is over %d", n, maxArgonThreads))
			}
			h.threads = uint8(n)
		default:
			return nil, bad(fmt.Sprintf("unknown parameter %q", k))
		}
	}
	if !seen["m"] || !seen["t"] || !seen["p"] {
		return nil, bad("want parameters m, t and p")
	}
	switch {
	case h.threads < 1:
		return nil, bad("p must be at least 1")
	case h.time < 1 || h.time > maxArgonTime:
		return nil, bad(fmt.Sprintf("t must be between 1 and %d", maxArgonTime))
	case h.memory < 8*uint32(h.threads) || h.memory > maxArgonMemory:
		return nil, bad(fmt.Sprintf("m must be between 8*p and %d KiB", maxArgonMemory))
	}
	var err error
	if h.salt, err = b64(parts[4]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 {
		return nil, bad("salt must be 8 to 64 bytes in unpadded base64")
	}
	if h.key, err = b64(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 128 {
		return nil, bad("hash must be 16 to 128 bytes in unpadded base64")
	}
	return h, nil
}

// b64 decodes unpadded standard base64 (padding is tolerated).
func b64(s string) ([]byte, error) {
	return base64.RawStdEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}
