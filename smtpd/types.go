package smtpd

import (
	"mailgate/internal/mailaddr"
	"mailgate/internal/spool"
)

// Path is a parsed envelope address.
type Path = mailaddr.Address

// Message is a received message body.
type Message = spool.Message
