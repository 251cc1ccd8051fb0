// Package wire holds what the client, proxyext and the test servers share
// about SOCKS messages beyond their types, which are the root package's:
// the stages of an exchange that errors name, the error every decoding
// failure wraps, and what a peer's bytes may become as text.
package wire

import "errors"

// ErrMalformed is the error every decoding failure wraps: the peer sent
// bytes that are not a valid message.
var ErrMalformed = errors.New("malformed message")

// A Stage names the message of an exchange that an error is about, in the
// words its errors print.
type Stage string

// The stages of the exchanges with a proxy.
const (
	StageGreeting          Stage = "greeting reply"       // the method selection
	StageAuth              Stage = "authentication reply" // the answer to the credentials
	StageConnectReply      Stage = "CONNECT reply"
	StageBindReply1        Stage = "BIND reply 1" // the address the proxy listens on
	StageBindReply2        Stage = "BIND reply 2" // the peer that connected
	StageUDPAssociateReply Stage = "UDP ASSOCIATE reply"
	StageMBINDReply        Stage = "MBIND reply"        // the address of a multiplexed BIND
	StageMBINDStreamReply  Stage = "MBIND stream reply" // the header of a stream: its peer
	StageHTTPConnect       Stage = "HTTP CONNECT response"
)

// A StageError says which message of an exchange failed. It unwraps to the
// cause, so errors.Is(err, io.ErrUnexpectedEOF) still holds for a message
// cut short.
type StageError struct {
	Stage Stage
	Err   error
}

func (e *StageError) Error() string { return string(e.Stage) + ": " + e.Err.Error() }
func (e *StageError) Unwrap() error { return e.Err }

// AtStage wraps err, unless nil, in a StageError for stage.
func AtStage(stage Stage, err error) error {
	if err == nil {
		return nil
	}
	return &StageError{Stage: stage, Err: err}
}

// StageOf returns the stage of the first StageError in err's tree, or ""
// when there is none.
func StageOf(err error) Stage {
	var se *StageError
	if errors.As(err, &se) {
		return se.Stage
	}
	return ""
}
