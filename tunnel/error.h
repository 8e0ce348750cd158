// The tunnel's error codes. Codes below 100 travel on the wire (RESET and GOAWAY frames carry
// them as u32); codes from 100 up are local outcomes that the peer never sees. Both are exposed to
// applications as boost::system::error_code in tunnel::category(), so that async handlers get an
// error_code as Asio's do, and a reset stream reports exactly the code its peer sent.
#pragma once

#include <cstdint>
#include <string_view>
#include <system_error>

#include <boost/system/error_code.hpp>

namespace outpost::tunnel {

enum class Errc : uint32_t {
  // On the wire. Stable: never renumber.
  kNoError = 0,
  kProtocolError = 1,      // the peer broke the protocol; the connection closes
  kInternalError = 2,      // the sender hit a bug or an environment failure
  kFlowControlError = 3,   // the peer sent past its credit or overflowed a window
  kStreamClosed = 4,       // a frame arrived for a stream that is closed or half-closed
  kFrameTooLarge = 5,      // a frame longer than the negotiated maximum
  kRefusedStream = 6,      // not accepted (too many streams, draining); safe to retry elsewhere
  kCancel = 7,             // the other end no longer wants the stream
  kMessageTooLarge = 8,    // a reassembled message passed the stream's size limit
  kGoingAway = 9,          // the sender is draining: finish what is open, open nothing new
  kReplaced = 10,          // a newer connection with the same identity and index replaced this one
  kTimeout = 11,           // the peer was silent for too long, or a write stalled
  kApplicationError = 12,  // the application reset the stream; the reason says why
  // Local only.
  kEndOfStream = 100,   // the peer half-closed: no more messages will arrive
  kTunnelLost = 101,    // the connection carrying the stream ended
  kNotConnected = 102,  // no connection was available to open the stream on
  kStreamLimit = 103,   // too many streams are open on this connection
};

const boost::system::error_category& category();

inline boost::system::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), category()};
}

// A short stable name, "flow_control_error", for logs and tests.
std::string_view errc_name(Errc e);

// True when `code` is a value that may appear in a RESET or GOAWAY frame.
inline bool is_wire_code(uint32_t code) {
  return code <= static_cast<uint32_t>(Errc::kApplicationError);
}

}  // namespace outpost::tunnel

template <>
struct boost::system::is_error_code_enum<outpost::tunnel::Errc> : std::true_type {};
