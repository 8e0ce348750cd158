// systemd's notification protocol (sd_notify(3)), spoken directly over $NOTIFY_SOCKET so that
// the control plane needs no libsystemd: READY=1 once it serves, STATUS= lines, WATCHDOG=1 pings
// while its event loop and blocking pool both make progress, STOPPING=1 when it drains. Outside
// systemd (no $NOTIFY_SOCKET) every call does nothing.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace outpost::control {

void notify_service_manager(std::string_view state);

// Half of $WATCHDOG_USEC when the service manager expects pings for this process, else empty.
std::optional<std::chrono::microseconds> watchdog_interval();

}  // namespace outpost::control
