package main

// Least privilege. Port 25 is below 1024: either the gateway starts as an
// unprivileged user that holds CAP_NET_BIND_SERVICE (the systemd unit in
// deploy/ does this, and needs no "user" key), or it starts as root with
// "user: mailgate" in the config: it then binds every listening socket,
// and becomes that user, with its group and supplementary groups, before
// it accepts a single connection.
//
// After the switch the process still has every socket and the files it
// opened (config, certificate, key, users file were read as root), but
// whatever it opens later is opened as the user:
//   - the state file (state.store: file:..., opened on first use): its
//     directory must be writable by the user;
//   - spool files for large messages, in $TMPDIR (default /tmp);
//   - on SIGHUP, the config file, certificate, key and users file are read
//     again: they must be readable by the user (owner = the user, mode 600).
// The first two are checked before serving.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"mailgate/config"
)

// ids are the numeric identity of a user.
type ids struct {
	name     string
	uid, gid int
	groups   []int // supplementary groups, the primary one included
}

// lookupUser resolves a user name (or a numeric uid) from the system's
// user database.
func lookupUser(name string) (ids, error) {
	u, err := user.Lookup(name)
	if err != nil && strings.Trim(name, "0123456789") == "" {
		u, err = user.LookupId(name)
	}
	var unknown user.UnknownUserError
	var unknownID user.UnknownUserIdError
	switch {
	case errors.As(err, &unknown), errors.As(err, &unknownID):
		return ids{}, fmt.Errorf("user %q: no such user on this system", name)
	case err != nil:
		return ids{}, fmt.Errorf("user %q: %w", name, err)
	}
	id := ids{name: u.Username}
	if id.uid, err = strconv.Atoi(u.Uid); err != nil {
		return ids{}, fmt.Errorf("user %q: uid %q is not a number", name, u.Uid)
	}
	if id.gid, err = strconv.Atoi(u.Gid); err != nil {
		return ids{}, fmt.Errorf("user %q: gid %q is not a number", name, u.Gid)
	}
	gs, err := u.GroupIds()
	if err != nil {
		return ids{}, fmt.Errorf("user %q: listing its groups: %w", name, err)
	}
	id.groups = []int{id.gid}
	for _, g := range gs {
		n, err := strconv.Atoi(g)
		if err != nil {
			return ids{}, fmt.Errorf("user %q: group id %q is not a number", name, g)
		}
		if n != id.gid {
			id.groups = append(id.groups, n)
		}
	}
	return id, nil
}

// dropPrivileges runs once every listening socket is bound, before any
// connection is accepted. With "user" set it becomes that user (started
// as root) or checks that it already is (started as that user, e.g. by
// systemd's User=); anything else is an error and the gateway must not
// start. Without "user", running as root is allowed but warned about.
func dropPrivileges(c *config.Config, log *slog.Logger) error {
	euid := os.Geteuid()
	if c.User == "" {
		if euid == 0 {
			log.Warn(`running as root: set "user" in the config to drop privileges once the listeners are bound, ` +
				"or start the gateway as an unprivileged user with CAP_NET_BIND_SERVICE (see deploy/mailgate.service)")
		}
		return nil
	}
	id, err := lookupUser(c.User)
	if err != nil {
		return err
	}
	switch euid {
	case id.uid:
		log.Info("running as the configured user", "user", id.name, "uid", id.uid)
	case 0:
		if err := setIDs(id); err != nil {
			return fmt.Errorf("switching to user %q (uid %d, gid %d): %w", id.name, id.uid, id.gid, err)
		}
		log.Info("privileges dropped", "user", id.name, "uid", id.uid, "gid", id.gid, "groups", id.groups)
	default:
		return fmt.Errorf("user %q: started as uid %d, which cannot switch users: start as root or as %s",
			id.name, euid, id.name)
	}
	return checkFiles(c, id)
}

// checkFiles makes sure what the gateway opens after the switch is open to
// the user: the state file's directory and the spool directory. A file
// store that does not exist yet is the config check's business (a
// warning); a refusal here is one the switch caused.
func checkFiles(c *config.Config, id ids) error {
	var errs []error
	if path, ok := strings.CutPrefix(c.State.Store, "file:"); ok && path != "" && c.NeedsState() {
		target, what := path, "file"
		if _, err := os.Stat(path); err != nil { // not there yet, or not even visible
			target, what = filepath.Dir(path), "directory"
		}
		if err := writable(target); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("state.store: the %s %s is not writable by user %s (uid %d): %w; "+
				"chown -R %s %s (the systemd unit's StateDirectory=mailgate does it)",
				what, target, id.name, id.uid, err, id.name, filepath.Dir(path)))
		}
	}
	if dir := os.TempDir(); writable(dir) != nil {
		errs = append(errs, fmt.Errorf("the spool directory %s ($TMPDIR) is not writable by user %s (uid %d): "+
			"large messages could not be received", dir, id.name, id.uid))
	}
	return errors.Join(errs...)
}
