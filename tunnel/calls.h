// Call patterns over streams (docs/protocol.md, "Calls"). A stream carries messages both ways;
// the three call shapes are conventions on top:
//  - unary: the caller opens the stream with its request and FIN in the OPEN frame; the callee
//    answers one message with FIN. One frame each way.
//  - server streaming: the same request; the callee answers any number of messages, then FIN.
//  - bidirectional: both ends write messages as they like and half-close when done.
// Either end cancels with Stream::reset(Errc::kCancel); the other end's pending read or write
// fails with kCancel at once.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "tunnel/connection.h"

namespace outpost::tunnel {

// Reads the single response of a unary call. Fails with kProtocolError when the callee sends no
// message or more than one.
void async_read_unary_response(const std::shared_ptr<Stream>& stream,
                               std::function<void(boost::system::error_code, std::string)> done);

// Reads every message until the peer half-closes; `done` gets an empty error code on a clean
// end and the stream's error otherwise.
void async_read_all(const std::shared_ptr<Stream>& stream,
                    std::function<void(std::string)> on_message,
                    std::function<void(boost::system::error_code)> done);

}  // namespace outpost::tunnel
