/* Checks the allocation-free path of the C API: a session initialized in a
 * static buffer with specdec_session_size and specdec_session_init gives
 * bit-for-bit the logits of a session from specdec_session_new, and so does
 * a model read from caller memory with specdec_model_from_memory. Batched
 * forward calls, and forward passes on a pool of threads, give the same
 * bits as one token per call on the calling thread.
 *
 * Usage: session_memory CHECKPOINT TOKENIZER
 *        session_memory --fresh-start CHECKPOINT
 *
 * --fresh-start checks only that a new session in caller memory filled with
 * garbage starts like an allocated one: the first forward call at a
 * position after 0 gives the same logits. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "specdec.h"

/* Enough for stories260K (seq_len 512) with batches of 8, plus 16 bytes of
 * alignment slack. */
#define ARENA_BYTES (4u << 20)

#define MAX_BATCH 8

static unsigned char arena[ARENA_BYTES];

/* Runs `tokens` through `session` in batches of up to `batch` and copies the
 * logits of every position into `rows` (n rows of vocab_size floats). */
static void forward_all(specdec_session *session, const int32_t *tokens, size_t n, size_t batch, size_t vocab_size,
                        float *rows) {
    size_t pos = 0;
    while (pos < n) {
        size_t count = n - pos < batch ? n - pos : batch;
        const float *logits = NULL;
        harness_require(specdec_forward(session, tokens + pos, count, pos, &logits), "specdec_forward");
        memcpy(rows + pos * vocab_size, logits, count * vocab_size * sizeof(float));
        pos += count;
    }
}

/* specdec_session_new zeroes its memory. A session from specdec_session_init
 * must not differ, or a first forward call after position 0 reads whatever
 * the caller's memory held (uninitialized memory, for a fresh malloc). */
static int check_fresh_start(const char *checkpoint) {
    specdec_model *model = harness_load_model(checkpoint, NULL);
    specdec_session *static_session = NULL;
    specdec_session *heap_session = NULL;
    const float *static_logits = NULL;
    const float *heap_logits = NULL;
    specdec_config config;
    unsigned char *aligned = arena + (16 - (size_t)((uintptr_t)arena % 16)) % 16;
    size_t needed = 0;
    int32_t token = 5;

    harness_require(specdec_model_config(model, &config), "specdec_model_config");
    harness_require(specdec_session_size(model, 1, &needed), "specdec_session_size");
    if (needed > ARENA_BYTES - 16) {
        fprintf(stderr, "the static arena of %lu bytes is too small\n", (unsigned long)ARENA_BYTES);
        return EXIT_FAILURE;
    }
    /* 0xff bytes read as NaN floats. */
    memset(arena, 0xff, sizeof arena);
    CHECK_STATUS(specdec_session_init(model, 1, aligned, needed, &static_session), SPECDEC_OK);
    CHECK_STATUS(specdec_session_new(model, 1, &heap_session), SPECDEC_OK);
    CHECK_STATUS(specdec_forward(static_session, &token, 1, 3, &static_logits), SPECDEC_OK);
    CHECK_STATUS(specdec_forward(heap_session, &token, 1, 3, &heap_logits), SPECDEC_OK);
    if (static_logits != NULL && heap_logits != NULL) {
        if (memcmp(static_logits, heap_logits, config.vocab_size * sizeof(float)) != 0) {
            fprintf(stderr, "first forward at position 3: logit 0 is %g in caller memory, %g allocated\n",
                    (double)static_logits[0], (double)heap_logits[0]);
        }
        CHECK(memcmp(static_logits, heap_logits, config.vocab_size * sizeof(float)) == 0);
    }
    specdec_session_free(heap_session);
    specdec_model_free(model);
    return harness_finish("session_memory --fresh-start");
}

int main(int argc, char **argv) {
    const char prompt[] = "Once upon a time, there was a little girl named Lily. She loved to play outside.";
    specdec_model *model;
    specdec_model *memory_model = NULL;
    specdec_config config;
    specdec_tokenizer *tokenizer = NULL;
    specdec_session *static_session = NULL;
    specdec_session *heap_session = NULL;
    specdec_session *memory_model_session = NULL;
    specdec_session *single_session = NULL;
    specdec_session *threaded_session = NULL;
    unsigned char *aligned;
    unsigned char *checkpoint;
    size_t checkpoint_len;
    size_t needed = 0;
    size_t n_tokens = 0;
    size_t vocab;
    int32_t tokens[128];
    float *static_rows;
    float *heap_rows;
    float *memory_model_rows;
    float *single_rows;
    float *threaded_rows;

    if (argc == 3 && strcmp(argv[1], "--fresh-start") == 0) {
        return check_fresh_start(argv[2]);
    }
    if (argc != 3) {
        fprintf(stderr, "usage: session_memory CHECKPOINT TOKENIZER\n       session_memory --fresh-start CHECKPOINT\n");
        return EXIT_FAILURE;
    }
    model = harness_load_model(argv[1], &config);
    vocab = config.vocab_size;
    harness_require(specdec_tokenizer_from_file(argv[2], vocab, &tokenizer), "specdec_tokenizer_from_file");
    harness_require(specdec_tokenizer_encode(tokenizer, prompt, sizeof prompt - 1, true, false, tokens,
                                             sizeof tokens / sizeof tokens[0], &n_tokens),
                    "specdec_tokenizer_encode");
    printf("prompt: %lu tokens\n", (unsigned long)n_tokens);

    /* The session lives in the static arena, rounded up to 16 bytes. */
    aligned = arena + (16 - (size_t)((uintptr_t)arena % 16)) % 16;
    CHECK_STATUS(specdec_session_size(model, MAX_BATCH, &needed), SPECDEC_OK);
    printf("session memory for a batch of %d: %lu bytes\n", MAX_BATCH, (unsigned long)needed);
    if (needed == 0 || needed > ARENA_BYTES - 16) {
        fprintf(stderr, "the static arena of %lu bytes is too small\n", (unsigned long)ARENA_BYTES);
        return EXIT_FAILURE;
    }
    CHECK_STATUS(specdec_session_init(model, MAX_BATCH, aligned, needed, &static_session), SPECDEC_OK);
    CHECK_STATUS(specdec_session_new(model, MAX_BATCH, &heap_session), SPECDEC_OK);

    checkpoint = harness_read_file(argv[1], &checkpoint_len);
    CHECK_STATUS(specdec_model_from_memory(checkpoint, checkpoint_len, &memory_model), SPECDEC_OK);
    CHECK_STATUS(specdec_session_new(memory_model, MAX_BATCH, &memory_model_session), SPECDEC_OK);
    CHECK_STATUS(specdec_session_new(model, 1, &single_session), SPECDEC_OK);
    CHECK_STATUS(specdec_session_new(model, MAX_BATCH, &threaded_session), SPECDEC_OK);
    if (static_session == NULL || heap_session == NULL || memory_model_session == NULL || single_session == NULL ||
        threaded_session == NULL) {
        return harness_finish("session_memory");
    }

    static_rows = (float *)harness_malloc(n_tokens * vocab * sizeof(float));
    heap_rows = (float *)harness_malloc(n_tokens * vocab * sizeof(float));
    memory_model_rows = (float *)harness_malloc(n_tokens * vocab * sizeof(float));
    single_rows = (float *)harness_malloc(n_tokens * vocab * sizeof(float));
    threaded_rows = (float *)harness_malloc(n_tokens * vocab * sizeof(float));
    CHECK_STATUS(specdec_session_set_threads(threaded_session, 3), SPECDEC_OK);
    /* The caller-memory session runs on 2 threads, which
     * specdec_session_free stops below. */
    CHECK_STATUS(specdec_session_set_threads(static_session, 2), SPECDEC_OK);
    forward_all(static_session, tokens, n_tokens, MAX_BATCH, vocab, static_rows);
    forward_all(threaded_session, tokens, n_tokens, MAX_BATCH, vocab, threaded_rows);
    forward_all(heap_session, tokens, n_tokens, MAX_BATCH, vocab, heap_rows);
    forward_all(memory_model_session, tokens, n_tokens, MAX_BATCH, vocab, memory_model_rows);
    forward_all(single_session, tokens, n_tokens, 1, vocab, single_rows);
    CHECK(memcmp(static_rows, heap_rows, n_tokens * vocab * sizeof(float)) == 0);
    CHECK(memcmp(memory_model_rows, heap_rows, n_tokens * vocab * sizeof(float)) == 0);
    CHECK(memcmp(single_rows, heap_rows, n_tokens * vocab * sizeof(float)) == 0);
    CHECK(memcmp(threaded_rows, heap_rows, n_tokens * vocab * sizeof(float)) == 0);

    /* Rolling back: running the last token again at its position gives the
     * same logits, since the cache entries behind it are unchanged. */
    {
        const float *logits = NULL;
        size_t last = n_tokens - 1;
        CHECK_STATUS(specdec_forward(static_session, &tokens[last], 1, last, &logits), SPECDEC_OK);
        CHECK(logits != NULL);
        if (logits != NULL) {
            CHECK(memcmp(logits, heap_rows + last * vocab, vocab * sizeof(float)) == 0);
        }
    }

    /* specdec_session_free leaves a session in caller memory alone, and the
     * memory can then hold a new session. */
    specdec_session_free(static_session);
    static_session = NULL;
    CHECK_STATUS(specdec_session_size(model, 1, &needed), SPECDEC_OK);
    CHECK_STATUS(specdec_session_init(model, 1, aligned, needed, &static_session), SPECDEC_OK);
    if (static_session != NULL) {
        memset(static_rows, 0, n_tokens * vocab * sizeof(float));
        forward_all(static_session, tokens, n_tokens, 1, vocab, static_rows);
        CHECK(memcmp(static_rows, heap_rows, n_tokens * vocab * sizeof(float)) == 0);
    }

    free(static_rows);
    free(heap_rows);
    free(memory_model_rows);
    free(single_rows);
    free(threaded_rows);
    specdec_session_free(threaded_session);
    specdec_session_free(single_session);
    specdec_session_free(memory_model_session);
    specdec_session_free(heap_session);
    specdec_model_free(memory_model);
    free(checkpoint);
    specdec_tokenizer_free(tokenizer);
    specdec_model_free(model);
    return harness_finish("session_memory");
}
