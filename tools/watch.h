/* shmheap-dump --watch: a frame redrawn in place every interval on a
 * terminal, like top(1), or printed as repeated blocks when standard output
 * is not a terminal.  See watch.c. */
#ifndef SHMHEAP_WATCH_H
#define SHMHEAP_WATCH_H

#include <stdio.h>

/* Writes one frame to out.  Returns 0 to go on, 1 when this frame is the
 * last (what it shows can no longer change). */
typedef int (*watch_frame_fn)(FILE *out, void *ctx);

/* Shows frames every `seconds` under the title line `title` until q (on a
 * terminal), SIGINT, SIGQUIT, SIGTERM or SIGHUP, until `count` frames have
 * been shown (0: no limit), or until frame returns 1.  The terminal is left
 * as it was found: its modes, the cursor, the main screen.  Returns 0, or 2
 * if the view could not be drawn; the signals end the process by their
 * default action once the terminal is restored (a signal the caller ignores
 * stays ignored). */
int watch_run(const char *title, double seconds, unsigned long count, watch_frame_fn frame, void *ctx);

#endif
