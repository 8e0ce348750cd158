#include "tunnel/error.h"

#include <string>

namespace outpost::tunnel {
namespace {

class Category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "outpost.tunnel"; }
  std::string message(int value) const override {
    return std::string(errc_name(static_cast<Errc>(value)));
  }
};

}  // namespace

const boost::system::error_category& category() {
  static const Category instance;
  return instance;
}

std::string_view errc_name(Errc e) {
  switch (e) {
    case Errc::kNoError:
      return "no_error";
    case Errc::kProtocolError:
      return "protocol_error";
    case Errc::kInternalError:
      return "internal_error";
    case Errc::kFlowControlError:
      return "flow_control_error";
    case Errc::kStreamClosed:
      return "stream_closed";
    case Errc::kFrameTooLarge:
      return "frame_too_large";
    case Errc::kRefusedStream:
      return "refused_stream";
    case Errc::kCancel:
      return "cancel";
    case Errc::kMessageTooLarge:
      return "message_too_large";
    case Errc::kGoingAway:
      return "going_away";
    case Errc::kReplaced:
      return "replaced";
    case Errc::kTimeout:
      return "timeout";
    case Errc::kApplicationError:
      return "application_error";
    case Errc::kEndOfStream:
      return "end_of_stream";
    case Errc::kTunnelLost:
      return "tunnel_lost";
    case Errc::kNotConnected:
      return "not_connected";
    case Errc::kStreamLimit:
      return "stream_limit";
  }
  return "unknown_error";
}

}  // namespace outpost::tunnel
