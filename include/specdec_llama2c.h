/* specdec_llama2c.h: the functions and types of llama2.c's run.c, on top of
 * the specdec C API.
 *
 * A program written against run.c's functions compiles unchanged when it
 * includes this header in place of run.c, and links with libspecdec. The
 * header is self-contained C99 and C++11, and every name it adds besides
 * run.c's own carries the specdec_ / SPECDEC_ prefix.
 *
 * Like run.c, a function that fails prints a message to stderr and calls
 * exit(EXIT_FAILURE).
 *
 * Differences from run.c:
 * - Transformer keeps only run.c's `config` member; Tokenizer and Sampler
 *   keep only `vocab_size`. The other members are specdec's handles.
 * - decode() returns a string in a buffer of the Tokenizer, overwritten by
 *   the next decode() on it; run.c's strings stay valid until
 *   free_tokenizer(). So a Tokenizer is used by one thread at a time.
 * - build_sampler() uses a seed of 0 as given. run.c's main replaces 0 by
 *   the time before it calls build_sampler(), so a copy of that main
 *   behaves the same.
 * - forward() and decode() exit with a message for a token outside the
 *   vocabulary or a position outside the context, where run.c reads out of
 *   bounds. build_sampler() exits for a negative or NaN temperature or a
 *   top-p outside [0, 1]. */

#ifndef SPECDEC_LLAMA2C_H
#define SPECDEC_LLAMA2C_H

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specdec.h"

/* encode() hands run.c's `int *` token buffer to specdec as `int32_t *`. */
#if defined(__cplusplus)
static_assert(sizeof(int) == sizeof(int32_t), "specdec_llama2c.h needs a 32-bit int");
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(int) == sizeof(int32_t), "specdec_llama2c.h needs a 32-bit int");
#else
typedef char specdec_llama2c_int_is_32_bits[sizeof(int) == sizeof(int32_t) ? 1 : -1];
#endif

/* Initial size of the Tokenizer's decode buffer, which grows for longer
 * pieces. */
#define SPECDEC_LLAMA2C_PIECE_CAPACITY 64

/* run.c's model hyperparameters. */
typedef struct {
    int dim;
    int hidden_dim;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int vocab_size;
    int seq_len;
} Config;

typedef struct {
    Config config;
    specdec_model *specdec_model_handle;
    /* A session whose forward calls take one token, as run.c's do. */
    specdec_session *specdec_session_handle;
    /* A writable copy of the last logits, which sample() overwrites. */
    float *specdec_logits;
} Transformer;

typedef struct {
    int vocab_size;
    specdec_tokenizer *specdec_tokenizer_handle;
    /* NUL-terminated copy of the last piece that decode() returned. */
    char *specdec_piece;
    size_t specdec_piece_capacity;
} Tokenizer;

typedef struct {
    int vocab_size;
    specdec_sampler *specdec_sampler_handle;
} Sampler;

/* Prints "FUNCTION: message" to stderr and exits, when `status` is an error. */
static inline void specdec_llama2c_check(specdec_status status, const char *function) {
    if (status != SPECDEC_OK) {
        fprintf(stderr, "%s: %s\n", function, specdec_status_message((int32_t)status));
        exit(EXIT_FAILURE);
    }
}

static inline void *specdec_llama2c_malloc(size_t size, const char *function) {
    void *memory = malloc(size == 0 ? 1 : size);
    if (memory == NULL) {
        fprintf(stderr, "%s: out of memory\n", function);
        exit(EXIT_FAILURE);
    }
    return memory;
}

static inline void build_transformer(Transformer *t, char *checkpoint_path) {
    specdec_config config;
    specdec_status status = specdec_model_from_file(checkpoint_path, &t->specdec_model_handle);
    if (status != SPECDEC_OK) {
        fprintf(stderr, "build_transformer: cannot load %s: %s\n", checkpoint_path,
                specdec_status_message((int32_t)status));
        exit(EXIT_FAILURE);
    }
    specdec_llama2c_check(specdec_model_config(t->specdec_model_handle, &config), "build_transformer");
    /* specdec keeps every size at most INT32_MAX, so each fits in an int. */
    t->config.dim = (int)config.dim;
    t->config.hidden_dim = (int)config.hidden_dim;
    t->config.n_layers = (int)config.n_layers;
    t->config.n_heads = (int)config.n_heads;
    t->config.n_kv_heads = (int)config.n_kv_heads;
    t->config.vocab_size = (int)config.vocab_size;
    t->config.seq_len = (int)config.seq_len;
    specdec_llama2c_check(specdec_session_new(t->specdec_model_handle, 1, &t->specdec_session_handle),
                          "build_transformer");
    t->specdec_logits =
        (float *)specdec_llama2c_malloc((size_t)config.vocab_size * sizeof(float), "build_transformer");
}

static inline void free_transformer(Transformer *t) {
    free(t->specdec_logits);
    specdec_session_free(t->specdec_session_handle);
    specdec_model_free(t->specdec_model_handle);
    t->specdec_logits = NULL;
    t->specdec_session_handle = NULL;
    t->specdec_model_handle = NULL;
}

/* Runs `token` at position `pos` and returns its logits, which stay valid
 * until the next forward() on `t`. */
static inline float *forward(Transformer *t, int token, int pos) {
    const float *logits;
    int32_t id = (int32_t)token;
    specdec_status status;
    if (pos < 0) {
        fprintf(stderr, "forward: position %d is negative\n", pos);
        exit(EXIT_FAILURE);
    }
    status = specdec_forward(t->specdec_session_handle, &id, 1, (size_t)pos, &logits);
    if (status != SPECDEC_OK) {
        fprintf(stderr, "forward: token %d at position %d: %s\n", token, pos,
                specdec_status_message((int32_t)status));
        exit(EXIT_FAILURE);
    }
    memcpy(t->specdec_logits, logits, (size_t)t->config.vocab_size * sizeof(float));
    return t->specdec_logits;
}

static inline void build_tokenizer(Tokenizer *t, char *tokenizer_path, int vocab_size) {
    specdec_status status;
    if (vocab_size <= 0) {
        fprintf(stderr, "build_tokenizer: vocab_size %d is not positive\n", vocab_size);
        exit(EXIT_FAILURE);
    }
    status = specdec_tokenizer_from_file(tokenizer_path, (size_t)vocab_size, &t->specdec_tokenizer_handle);
    if (status != SPECDEC_OK) {
        fprintf(stderr, "build_tokenizer: cannot load %s: %s\n", tokenizer_path,
                specdec_status_message((int32_t)status));
        exit(EXIT_FAILURE);
    }
    t->vocab_size = vocab_size;
    t->specdec_piece_capacity = SPECDEC_LLAMA2C_PIECE_CAPACITY;
    t->specdec_piece = (char *)specdec_llama2c_malloc(t->specdec_piece_capacity, "build_tokenizer");
    t->specdec_piece[0] = '\0';
}

static inline void free_tokenizer(Tokenizer *t) {
    free(t->specdec_piece);
    specdec_tokenizer_free(t->specdec_tokenizer_handle);
    t->specdec_piece = NULL;
    t->specdec_piece_capacity = 0;
    t->specdec_tokenizer_handle = NULL;
}

/* Encodes `text` into `tokens`, which must have room for strlen(text) + 3
 * ids, as run.c's callers allocate. */
static inline void encode(Tokenizer *t, char *text, int8_t bos, int8_t eos, int *tokens, int *n_tokens) {
    size_t count;
    size_t text_len;
    if (text == NULL) {
        fprintf(stderr, "encode: text is NULL\n");
        exit(EXIT_FAILURE);
    }
    text_len = strlen(text);
    specdec_llama2c_check(specdec_tokenizer_encode(t->specdec_tokenizer_handle, text, text_len, bos != 0,
                                                   eos != 0, (int32_t *)tokens, text_len + 3, &count),
                          "encode");
    *n_tokens = (int)count;
}

/* Returns the text of `token` following `prev_token`, NUL-terminated, in a
 * buffer that the next decode() on `t` overwrites. A raw byte piece of 0
 * reads as an empty string, as in run.c. */
static inline char *decode(Tokenizer *t, int prev_token, int token) {
    const uint8_t *piece;
    size_t len;
    specdec_status status =
        specdec_tokenizer_decode(t->specdec_tokenizer_handle, (int32_t)prev_token, (int32_t)token, &piece, &len);
    if (status != SPECDEC_OK) {
        fprintf(stderr, "decode: token %d after %d: %s\n", token, prev_token,
                specdec_status_message((int32_t)status));
        exit(EXIT_FAILURE);
    }
    if (len + 1 > t->specdec_piece_capacity) {
        free(t->specdec_piece);
        t->specdec_piece_capacity = len + 1;
        t->specdec_piece = (char *)specdec_llama2c_malloc(t->specdec_piece_capacity, "decode");
    }
    if (len > 0) {
        memcpy(t->specdec_piece, piece, len);
    }
    t->specdec_piece[len] = '\0';
    return t->specdec_piece;
}

/* Prints a decoded piece, except a single byte that is neither printable nor
 * whitespace: raw byte tokens can decode to control bytes. */
static inline void safe_printf(char *piece) {
    unsigned char first;
    if (piece == NULL || piece[0] == '\0') {
        return;
    }
    first = (unsigned char)piece[0];
    if (piece[1] == '\0' && !(isprint(first) || isspace(first))) {
        return;
    }
    printf("%s", piece);
}

static inline void build_sampler(Sampler *s, int vocab_size, float temperature, float topp,
                                 unsigned long long rng_seed) {
    specdec_status status;
    if (vocab_size <= 0) {
        fprintf(stderr, "build_sampler: vocab_size %d is not positive\n", vocab_size);
        exit(EXIT_FAILURE);
    }
    status = specdec_sampler_new((size_t)vocab_size, temperature, topp, (uint64_t)rng_seed,
                                 &s->specdec_sampler_handle);
    if (status != SPECDEC_OK) {
        fprintf(stderr, "build_sampler: temperature %g, top-p %g: %s\n", (double)temperature, (double)topp,
                specdec_status_message((int32_t)status));
        exit(EXIT_FAILURE);
    }
    s->vocab_size = vocab_size;
}

static inline void free_sampler(Sampler *s) {
    specdec_sampler_free(s->specdec_sampler_handle);
    s->specdec_sampler_handle = NULL;
}

/* Samples the next token from `vocab_size` logits, which it may overwrite
 * with probabilities. */
static inline int sample(Sampler *s, float *logits) {
    int32_t token;
    specdec_llama2c_check(specdec_sampler_sample(s->specdec_sampler_handle, logits, (size_t)s->vocab_size, &token),
                          "sample");
    return (int)token;
}

#endif /* SPECDEC_LLAMA2C_H */
