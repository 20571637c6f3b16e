/* notify.h - tell systemd how the daemon is doing (sd_notify protocol).
 *
 * A thin wrapper over libsystemd's sd_notify(3). Every function is a no-op returning 0 when
 * $NOTIFY_SOCKET is not set (not started by systemd with Type=notify, or run by hand). None
 * of them logs: they return a negative errno and the caller decides whether that matters (it
 * rarely does). */
#ifndef P1D_NOTIFY_H
#define P1D_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/**
 * notify_enabled - Whether $NOTIFY_SOCKET is set, i.e. whether messages go anywhere
 */
bool notify_enabled(void);

/**
 * notify_ready - Startup finished: send READY=1
 * Returns: 0 (sent, or nowhere to send), negative errno on failure
 */
int notify_ready(void);

/**
 * notify_status - Send a one-line STATUS= text shown by "systemctl status"
 * @fmt: printf format; newlines in the result are replaced by spaces
 * Returns: 0 or negative errno
 */
int notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * notify_watchdog - Send WATCHDOG=1 (call from a timer while the loop is healthy)
 * Returns: 0 or negative errno
 */
int notify_watchdog(void);

/**
 * notify_watchdog_usec - The watchdog interval systemd expects, in microseconds
 * Returns: 0 if the watchdog is not enabled for this process ($WATCHDOG_USEC unset, or
 * $WATCHDOG_PID names another process), else the interval. Ping at half of it.
 */
uint64_t notify_watchdog_usec(void);

/**
 * notify_stopping - Shutdown began: send STOPPING=1
 * Returns: 0 or negative errno
 */
int notify_stopping(void);

/**
 * notify_reloading - A reload (SIGHUP) began: send RELOADING=1 with MONOTONIC_USEC=now
 * Returns: 0 or negative errno
 *
 * MONOTONIC_USEC is what Type=notify-reload (systemd >= 253) needs to match the reload to the
 * request; older systemd ignores it. Send notify_ready() when the reload is done.
 */
int notify_reloading(void);

#endif
