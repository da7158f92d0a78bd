/* Helpers shared by the C test programs: counted checks that print every
 * failure to stderr, and setup steps (allocation, file and model loading)
 * that exit with a message when they fail. */

#ifndef HARNESS_H
#define HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "specdec.h"

/* Counts a check of a condition and prints the expression when it is false. */
#define CHECK(condition) harness_check((condition) != 0, __FILE__, __LINE__, #condition)

/* Counts a check that a call returns the expected status. */
#define CHECK_STATUS(call, expected) harness_check_status((call), (expected), __FILE__, __LINE__, #call)

void harness_check(int ok, const char *file, int line, const char *expression);
void harness_check_status(specdec_status found, specdec_status expected, const char *file, int line,
                          const char *call);

/* Prints "PROGRAM: N checks, M failures" to stdout and returns the exit
 * status: 0 when every check passed, else 1. */
int harness_finish(const char *program);

/* Returns the name of a status constant, such as "SPECDEC_ERR_IO". */
const char *harness_status_name(int status);

/* Exits with a message naming `what` unless `status` is SPECDEC_OK. */
void harness_require(specdec_status status, const char *what);

/* malloc that exits on failure; a size of 0 allocates 1 byte. */
void *harness_malloc(size_t size);

/* Reads a whole file into a malloc'd buffer and stores its length in
 * `*len`. Exits on failure. */
unsigned char *harness_read_file(const char *path, size_t *len);

/* Writes `len` bytes to a new file at `path`, replacing it. Exits on failure. */
void harness_write_file(const char *path, const void *data, size_t len);

/* Returns "DIR/NAME" in a malloc'd string. */
char *harness_join_path(const char *dir, const char *name);

/* Loads a checkpoint, exiting on failure. */
specdec_model *harness_load_model(const char *path, specdec_config *config);

/* Number of bytes of a decoded piece that llama2.c's safe_printf prints: the
 * bytes before the first NUL (it prints with "%s"), and none when that leaves
 * a single byte that is neither printable nor whitespace. */
size_t harness_printable_length(const uint8_t *piece, size_t len);

/* A growable byte string, always NUL-terminated once it has data. */
typedef struct harness_text {
    char *data;
    size_t len;
    size_t capacity;
} harness_text;

void harness_text_append(harness_text *text, const void *bytes, size_t len);
void harness_text_free(harness_text *text);

#endif /* HARNESS_H */
