// Fuzzes the tunnel's frame decoder with arbitrary WebSocket message bytes. Besides "never
// crash, never read out of bounds" (the sanitizers' job) it checks a property: any frame the
// decoder accepts, re-encoded, decodes to the same fields.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <variant>

#include "tunnel/frame_codec.h"

using namespace outpost::tunnel;

namespace {

std::string reencode(const Frame& f) {
  std::string out;
  switch (f.type) {
    case FrameType::kHello:
      encode_hello(out, f.hello);
      break;
    case FrameType::kOpen:
      encode_open(out, f.stream_id, f.flags, f.metadata, f.data);
      break;
    case FrameType::kData:
      encode_data(out, f.stream_id, f.flags, f.data);
      break;
    case FrameType::kHalfClose:
      encode_half_close(out, f.stream_id);
      break;
    case FrameType::kReset:
      encode_reset(out, f.stream_id, static_cast<Errc>(f.code), f.reason);
      break;
    case FrameType::kWindowUpdate:
      encode_window_update(out, f.stream_id, f.increment);
      break;
    case FrameType::kPing:
    case FrameType::kPong:
      encode_ping(out, f.type == FrameType::kPong, f.flags, f.opaque);
      break;
    case FrameType::kGoaway:
      encode_goaway(out, f.last_stream_id, static_cast<Errc>(f.code), f.reason);
      break;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto decoded = decode_frame(input);
  const Frame* frame = std::get_if<Frame>(&decoded);
  if (frame == nullptr) return 0;
  // Accepted frames are canonical: re-encoding gives back the same bytes.
  if (reencode(*frame) != input) std::abort();
  return 0;
}
