// Whether this binary is built with AddressSanitizer (scripts/sanitize address): a few tests
// measure memory, which ASan's quarantine keeps mapped by design.
#pragma once

namespace outpost::testing {

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OUTPOST_UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(OUTPOST_UNDER_ASAN)
#define OUTPOST_UNDER_ASAN 1
#endif

#ifdef OUTPOST_UNDER_ASAN
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif

}  // namespace outpost::testing
