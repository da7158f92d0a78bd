/* Feeds every function of the C API invalid input and checks the status it
 * returns: NULL pointers, broken files, buffers that are too small or
 * misaligned, positions past the context, token ids outside the vocabulary,
 * prompts that cannot fit, and invalid settings. After each error the output
 * arguments must still hold what the caller put there.
 *
 * Usage: bad_input CHECKPOINT TOKENIZER LARGE_TOKENIZER SCRATCH_DIR
 *
 * CHECKPOINT is a llama2.c model of 512 tokens and TOKENIZER its
 * tokenizer.bin; LARGE_TOKENIZER has 32000 pieces. The program writes its
 * broken files into SCRATCH_DIR, an existing directory. */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "specdec.h"

/* Pointer outputs are preset to the address of this object, so that a write
 * on failure shows up. */
static int sentinel_object;
#define SENTINEL ((void *)&sentinel_object)
#define SIZE_SENTINEL ((size_t)0x5eed)

static const char *scratch_dir;

typedef struct {
    specdec_model *model;
    specdec_config config;
    specdec_tokenizer *tokenizer;
    specdec_sampler *sampler;
    specdec_session *session;
    specdec_spec *spec;
    const char *model_path;
    const char *tokenizer_path;
    const char *large_tokenizer_path;
} fixture;

static void put_u32(unsigned char *at, uint32_t value) {
    at[0] = (unsigned char)(value & 0xff);
    at[1] = (unsigned char)((value >> 8) & 0xff);
    at[2] = (unsigned char)((value >> 16) & 0xff);
    at[3] = (unsigned char)((value >> 24) & 0xff);
}

/* Writes a valid v1 checkpoint with a shared classifier and all-zero weights:
 * the magic 0x616b3432, version 1, seven int32 hyperparameters and the
 * shared-classifier byte, zero-padded to 256 bytes, then the fp32 tensors. */
static char *write_v1_checkpoint(const char *name, uint32_t dim, uint32_t hidden_dim, uint32_t n_layers,
                                 uint32_t n_heads, uint32_t n_kv_heads, uint32_t vocab_size, uint32_t seq_len) {
    unsigned char header[256];
    static const unsigned char zeros[4096];
    uint32_t params[7];
    size_t kv_dim = (size_t)dim / n_heads * n_kv_heads;
    size_t floats = 2 * (size_t)n_layers * dim + dim + (size_t)vocab_size * dim +
                    (size_t)n_layers * (2 * (size_t)dim * dim + 2 * (size_t)dim * kv_dim + 3 * (size_t)dim * hidden_dim);
    size_t bytes = floats * 4;
    char *path = harness_join_path(scratch_dir, name);
    FILE *file = fopen(path, "wb");
    size_t i;

    params[0] = dim;
    params[1] = hidden_dim;
    params[2] = n_layers;
    params[3] = n_heads;
    params[4] = n_kv_heads;
    params[5] = vocab_size;
    params[6] = seq_len;
    memset(header, 0, sizeof header);
    put_u32(header, 0x616b3432u);
    put_u32(header + 4, 1);
    for (i = 0; i < 7; i++) {
        put_u32(header + 8 + 4 * i, params[i]);
    }
    header[36] = 1;
    if (file == NULL || fwrite(header, 1, sizeof header, file) != sizeof header) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(EXIT_FAILURE);
    }
    while (bytes > 0) {
        size_t chunk = bytes < sizeof zeros ? bytes : sizeof zeros;
        if (fwrite(zeros, 1, chunk, file) != chunk) {
            fprintf(stderr, "cannot write %s\n", path);
            exit(EXIT_FAILURE);
        }
        bytes -= chunk;
    }
    if (fclose(file) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(EXIT_FAILURE);
    }
    return path;
}

static char *write_scratch_file(const char *name, const void *data, size_t len) {
    char *path = harness_join_path(scratch_dir, name);
    harness_write_file(path, data, len);
    return path;
}

static void check_version_and_messages(void) {
    char expected[32];
    int32_t status;
    const int32_t unknown[] = {-1, 14, 1000, INT32_MIN, INT32_MAX};
    size_t i;

    CHECK(specdec_version() != NULL);
    CHECK(strcmp(specdec_version(), SPECDEC_VERSION) == 0);
    sprintf(expected, "%d.%d.%d", SPECDEC_VERSION_MAJOR, SPECDEC_VERSION_MINOR, SPECDEC_VERSION_PATCH);
    CHECK(strcmp(specdec_version(), expected) == 0);
    for (status = SPECDEC_OK; status <= SPECDEC_ERR_OUT_OF_MEMORY; status++) {
        const char *message = specdec_status_message(status);
        CHECK(message != NULL);
        if (message != NULL) {
            CHECK(message[0] != '\0');
            CHECK(strcmp(message, specdec_status_message(-1)) != 0);
        }
    }
    for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *message = specdec_status_message(unknown[i]);
        CHECK(message != NULL);
        if (message != NULL) {
            CHECK(strcmp(message, "unknown status value") == 0);
        }
    }
}

static int32_t count_calls(void *user, int32_t token, const uint8_t *piece, size_t len) {
    (void)token;
    (void)piece;
    (void)len;
    (*(int *)user)++;
    return 0;
}

static int32_t stop_at_once(void *user, int32_t token, const uint8_t *piece, size_t len) {
    count_calls(user, token, piece, len);
    return 1;
}

/* Every required pointer argument, one at a time, with the others valid. */
static void check_null_pointers(fixture *f) {
    specdec_model *model_out = (specdec_model *)SENTINEL;
    specdec_tokenizer *tokenizer_out = (specdec_tokenizer *)SENTINEL;
    specdec_session *session_out = (specdec_session *)SENTINEL;
    specdec_spec *spec_out = (specdec_spec *)SENTINEL;
    const float *logits = (const float *)SENTINEL;
    const uint8_t *piece = (const uint8_t *)SENTINEL;
    specdec_config config;
    specdec_config untouched_config;
    specdec_spec_stats stats;
    specdec_spec_stats untouched_stats;
    specdec_spec_params params;
    size_t size = SIZE_SENTINEL;
    float logit_row[512];
    int32_t token = 7;
    int32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t untouched_tokens[8];
    uint8_t memory_block[64];
    const unsigned char bytes[32] = {0};
    int calls = 0;

    memset(&config, 0xab, sizeof config);
    memcpy(&untouched_config, &config, sizeof config);
    memset(&stats, 0xab, sizeof stats);
    memcpy(&untouched_stats, &stats, sizeof stats);
    memcpy(untouched_tokens, tokens, sizeof tokens);
    memset(logit_row, 0, sizeof logit_row);
    memset(&params, 0, sizeof params);
    params.k = 2;
    params.lookup_ngram = 2;

    CHECK_STATUS(specdec_model_from_memory(NULL, 64, &model_out), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_model_from_memory(bytes, sizeof bytes, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_model_from_file(NULL, &model_out), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_model_from_file(f->model_path, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(model_out == (specdec_model *)SENTINEL);
    CHECK_STATUS(specdec_model_config(NULL, &config), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_model_config(f->model, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(memcmp(&config, &untouched_config, sizeof config) == 0);

    CHECK_STATUS(specdec_sampler_new(512, 1.0f, 0.9f, 1, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_sampler_sample(NULL, logit_row, 512, &token), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_sampler_sample(f->sampler, NULL, 512, &token), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_sampler_sample(f->sampler, logit_row, 512, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(token == 7);

    CHECK_STATUS(specdec_session_size(NULL, 1, &size), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_session_size(f->model, 1, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(size == SIZE_SENTINEL);
    CHECK_STATUS(specdec_session_init(NULL, 1, memory_block, sizeof memory_block, &session_out),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_session_init(f->model, 1, NULL, sizeof memory_block, &session_out),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_session_init(f->model, 1, memory_block, sizeof memory_block, NULL),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_session_new(NULL, 1, &session_out), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_session_new(f->model, 1, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(session_out == (specdec_session *)SENTINEL);
    CHECK_STATUS(specdec_session_set_threads(NULL, 2), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_forward(NULL, tokens, 1, 0, &logits), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_forward(f->session, NULL, 1, 0, &logits), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_forward(f->session, tokens, 1, 0, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(logits == (const float *)SENTINEL);

    CHECK_STATUS(specdec_spec_new(NULL, NULL, &params, &spec_out), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_spec_new(f->model, NULL, NULL, &spec_out), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(spec_out == (specdec_spec *)SENTINEL);
    CHECK_STATUS(specdec_spec_prefill(NULL, tokens, 1), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_spec_prefill(f->spec, NULL, 1), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_spec_step(NULL, 1, tokens, NULL, 8, &size), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_spec_step(f->spec, 1, NULL, NULL, 8, &size), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_spec_step(f->spec, 1, tokens, NULL, 8, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(size == SIZE_SENTINEL);
    CHECK(memcmp(tokens, untouched_tokens, sizeof tokens) == 0);
    CHECK_STATUS(specdec_spec_get_stats(NULL, &stats), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_spec_get_stats(f->spec, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(memcmp(&stats, &untouched_stats, sizeof stats) == 0);

    CHECK_STATUS(specdec_tokenizer_from_memory(NULL, 64, 512, &tokenizer_out), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_tokenizer_from_memory(bytes, sizeof bytes, 512, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_tokenizer_from_file(NULL, 512, &tokenizer_out), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_tokenizer_from_file(f->tokenizer_path, 512, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(tokenizer_out == (specdec_tokenizer *)SENTINEL);
    CHECK_STATUS(specdec_tokenizer_encode(NULL, "hi", 2, true, false, tokens, 8, &size), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_tokenizer_encode(f->tokenizer, NULL, 2, true, false, tokens, 8, &size),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_tokenizer_encode(f->tokenizer, "hi", 2, true, false, tokens, 8, NULL),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_tokenizer_encode(f->tokenizer, "hi", 2, true, false, NULL, 0, NULL),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK(size == SIZE_SENTINEL);
    CHECK(memcmp(tokens, untouched_tokens, sizeof tokens) == 0);
    CHECK_STATUS(specdec_tokenizer_decode(NULL, 1, 5, &piece, &size), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_tokenizer_decode(f->tokenizer, 1, 5, NULL, &size), SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_tokenizer_decode(f->tokenizer, 1, 5, &piece, NULL), SPECDEC_ERR_NULL_POINTER);
    CHECK(piece == (const uint8_t *)SENTINEL);
    CHECK(size == SIZE_SENTINEL);

    /* NULL text is allowed when its length is 0. */
    CHECK_STATUS(specdec_tokenizer_encode(f->tokenizer, NULL, 0, true, true, tokens, 8, &size), SPECDEC_OK);
    CHECK(size == 2);
    CHECK(tokens[0] == 1);
    CHECK(tokens[1] == 2);

    CHECK_STATUS(specdec_generate(NULL, f->tokenizer, f->sampler, "", 0, 4, count_calls, &calls),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_generate(f->session, NULL, f->sampler, "", 0, 4, count_calls, &calls),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_generate(f->session, f->tokenizer, NULL, "", 0, 4, count_calls, &calls),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_generate(f->session, f->tokenizer, f->sampler, "", 0, 4, NULL, NULL),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK_STATUS(specdec_generate(f->session, f->tokenizer, f->sampler, NULL, 3, 4, count_calls, &calls),
                 SPECDEC_ERR_NULL_POINTER);
    CHECK(calls == 0);

    /* The free functions ignore NULL. */
    specdec_model_free(NULL);
    specdec_tokenizer_free(NULL);
    specdec_sampler_free(NULL);
    specdec_session_free(NULL);
    specdec_spec_free(NULL);
}

static void check_generate_with_prompt(fixture *f, specdec_sampler *sampler, const char *prompt, size_t len,
                                       specdec_status expected) {
    int calls = 0;
    CHECK_STATUS(specdec_generate(f->session, f->tokenizer, sampler, prompt, len, 0, count_calls, &calls), expected);
    if (expected != SPECDEC_OK) {
        CHECK(calls == 0);
    }
}

static void check_model_files(fixture *f) {
    specdec_model *model = (specdec_model *)SENTINEL;
    unsigned char *data;
    unsigned char *shifted;
    size_t len;
    char *path;
    char *bad_utf8;
    const char garbage[] = "this is a text file, not a llama2.c checkpoint\n";

    data = harness_read_file(f->model_path, &len);

    path = write_scratch_file("first-half.bin", data, len / 2);
    CHECK_STATUS(specdec_model_from_file(path, &model), SPECDEC_ERR_TRUNCATED);
    free(path);
    path = write_scratch_file("header-only.bin", data, 16);
    CHECK_STATUS(specdec_model_from_file(path, &model), SPECDEC_ERR_TRUNCATED);
    free(path);
    path = write_scratch_file("empty.bin", data, 0);
    CHECK_STATUS(specdec_model_from_file(path, &model), SPECDEC_ERR_TRUNCATED);
    free(path);
    path = write_scratch_file("garbage.bin", garbage, sizeof garbage - 1);
    CHECK_STATUS(specdec_model_from_file(path, &model), SPECDEC_ERR_BAD_FORMAT);
    free(path);
    CHECK_STATUS(specdec_model_from_file(scratch_dir, &model), SPECDEC_ERR_IO);
    path = harness_join_path(scratch_dir, "no-such-file.bin");
    CHECK_STATUS(specdec_model_from_file(path, &model), SPECDEC_ERR_IO);
    free(path);
    /* Paths must be UTF-8. */
    bad_utf8 = harness_join_path(scratch_dir, "\xff\xfe.bin");
    CHECK_STATUS(specdec_model_from_file(bad_utf8, &model), SPECDEC_ERR_INVALID_ARGUMENT);
    free(bad_utf8);
    CHECK(model == (specdec_model *)SENTINEL);

    /* From memory: the whole file loads, a prefix is truncated, extra bytes
     * are not a checkpoint, and an address that is not 4-byte aligned is
     * rejected. */
    CHECK_STATUS(specdec_model_from_memory(data, len, &model), SPECDEC_OK);
    specdec_model_free(model);
    model = (specdec_model *)SENTINEL;
    CHECK_STATUS(specdec_model_from_memory(data, len - 4, &model), SPECDEC_ERR_TRUNCATED);
    CHECK_STATUS(specdec_model_from_memory(data, 0, &model), SPECDEC_ERR_TRUNCATED);
    shifted = (unsigned char *)harness_malloc(len + 8);
    memcpy(shifted, data, len);
    memset(shifted + len, 0, 8);
    CHECK_STATUS(specdec_model_from_memory(shifted, len + 4, &model), SPECDEC_ERR_BAD_FORMAT);
    memmove(shifted + 1, shifted, len);
    CHECK_STATUS(specdec_model_from_memory(shifted + 1, len, &model), SPECDEC_ERR_MISALIGNED);
    CHECK(model == (specdec_model *)SENTINEL);
    free(shifted);
    free(data);
}

static void check_tokenizer_files(fixture *f) {
    specdec_tokenizer *tokenizer = (specdec_tokenizer *)SENTINEL;
    unsigned char *data;
    size_t len;
    char *path;
    const unsigned char negative_length[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};

    CHECK_STATUS(specdec_tokenizer_from_file(f->large_tokenizer_path, 512, &tokenizer), SPECDEC_ERR_VOCAB_MISMATCH);
    CHECK_STATUS(specdec_tokenizer_from_file(f->tokenizer_path, 32000, &tokenizer), SPECDEC_ERR_VOCAB_MISMATCH);
    CHECK_STATUS(specdec_tokenizer_from_file(f->tokenizer_path, 0, &tokenizer), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_tokenizer_from_file(scratch_dir, 512, &tokenizer), SPECDEC_ERR_IO);
    path = harness_join_path(scratch_dir, "no-such-tokenizer.bin");
    CHECK_STATUS(specdec_tokenizer_from_file(path, 512, &tokenizer), SPECDEC_ERR_IO);
    free(path);

    data = harness_read_file(f->tokenizer_path, &len);
    path = write_scratch_file("tokenizer-first-half.bin", data, len / 2);
    CHECK_STATUS(specdec_tokenizer_from_file(path, 512, &tokenizer), SPECDEC_ERR_TRUNCATED);
    free(path);
    CHECK_STATUS(specdec_tokenizer_from_memory(data, 2, 512, &tokenizer), SPECDEC_ERR_TRUNCATED);
    CHECK_STATUS(specdec_tokenizer_from_memory(negative_length, sizeof negative_length, 512, &tokenizer),
                 SPECDEC_ERR_BAD_FORMAT);
    CHECK(tokenizer == (specdec_tokenizer *)SENTINEL);
    CHECK_STATUS(specdec_tokenizer_from_memory(data, len, 512, &tokenizer), SPECDEC_OK);
    specdec_tokenizer_free(tokenizer);
    free(data);
}

static void check_encode_and_decode(fixture *f) {
    const char text[] = "Once upon a time";
    size_t text_len = sizeof text - 1;
    size_t needed = SIZE_SENTINEL;
    size_t count = SIZE_SENTINEL;
    int32_t tokens[64];
    int32_t untouched[64];
    const uint8_t *piece = (const uint8_t *)SENTINEL;
    size_t len = SIZE_SENTINEL;
    size_t i;

    for (i = 0; i < 64; i++) {
        tokens[i] = -7;
    }
    memcpy(untouched, tokens, sizeof tokens);
    CHECK_STATUS(specdec_tokenizer_encode(f->tokenizer, text, text_len, true, false, NULL, 0, &needed), SPECDEC_OK);
    CHECK(needed == text_len + 3);
    CHECK_STATUS(specdec_tokenizer_encode(f->tokenizer, text, text_len, true, false, tokens, needed - 1, &count),
                 SPECDEC_ERR_BUFFER_TOO_SMALL);
    CHECK_STATUS(specdec_tokenizer_encode(f->tokenizer, text, text_len, true, false, tokens, 0, &count),
                 SPECDEC_ERR_BUFFER_TOO_SMALL);
    CHECK(count == SIZE_SENTINEL);
    CHECK(memcmp(tokens, untouched, sizeof tokens) == 0);
    CHECK_STATUS(specdec_tokenizer_encode(f->tokenizer, text, text_len, true, false, tokens, needed, &count),
                 SPECDEC_OK);
    CHECK(count >= 2);
    CHECK(count <= needed);
    CHECK(tokens[0] == 1);

    CHECK_STATUS(specdec_tokenizer_decode(f->tokenizer, 1, -1, &piece, &len), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
    CHECK_STATUS(specdec_tokenizer_decode(f->tokenizer, 1, (int32_t)f->config.vocab_size, &piece, &len),
                 SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
    CHECK_STATUS(specdec_tokenizer_decode(f->tokenizer, -1, 5, &piece, &len), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
    CHECK_STATUS(specdec_tokenizer_decode(f->tokenizer, (int32_t)f->config.vocab_size, 5, &piece, &len),
                 SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
    CHECK(piece == (const uint8_t *)SENTINEL);
    CHECK(len == SIZE_SENTINEL);
    CHECK_STATUS(specdec_tokenizer_decode(f->tokenizer, 1, (int32_t)f->config.vocab_size - 1, &piece, &len),
                 SPECDEC_OK);
}

static void check_sampler_settings(fixture *f) {
    specdec_sampler *sampler = (specdec_sampler *)SENTINEL;
    float logits[512];
    int32_t token = -7;

    CHECK_STATUS(specdec_sampler_new(512, -1.0f, 0.9f, 1, &sampler), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_sampler_new(512, (float)NAN, 0.9f, 1, &sampler), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_sampler_new(512, 1.0f, -0.1f, 1, &sampler), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_sampler_new(512, 1.0f, 1.5f, 1, &sampler), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_sampler_new(512, 1.0f, (float)NAN, 1, &sampler), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_sampler_new(0, 1.0f, 0.9f, 1, &sampler), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK(sampler == (specdec_sampler *)SENTINEL);

    memset(logits, 0, sizeof logits);
    CHECK_STATUS(specdec_sampler_sample(f->sampler, logits, 511, &token), SPECDEC_ERR_BUFFER_TOO_SMALL);
    CHECK_STATUS(specdec_sampler_sample(f->sampler, logits, 0, &token), SPECDEC_ERR_BUFFER_TOO_SMALL);
    CHECK(token == -7);
    CHECK_STATUS(specdec_sampler_sample(f->sampler, logits, 512, &token), SPECDEC_OK);
    CHECK(token >= 0);
    CHECK(token < 512);
}

static void check_sessions(fixture *f) {
    specdec_session *session = (specdec_session *)SENTINEL;
    const float *logits = (const float *)SENTINEL;
    size_t size = SIZE_SENTINEL;
    size_t needed = 0;
    unsigned char *block;
    unsigned char *aligned;
    int32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t seq_len = (int32_t)f->config.seq_len;

    CHECK_STATUS(specdec_session_size(f->model, 0, &size), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_session_size(f->model, (size_t)-1, &size), SPECDEC_ERR_OUT_OF_MEMORY);
    CHECK(size == SIZE_SENTINEL);
    CHECK_STATUS(specdec_session_new(f->model, 0, &session), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK(session == (specdec_session *)SENTINEL);

    /* Caller memory: too small, and not 16-byte aligned. */
    CHECK_STATUS(specdec_session_size(f->model, 2, &needed), SPECDEC_OK);
    block = (unsigned char *)harness_malloc(needed + 32);
    /* Zeroed like an allocated session, because the forward call at
     * seq_len - 2 below attends to cache entries that no call wrote. */
    memset(block, 0, needed + 32);
    aligned = block + (16 - (size_t)((uintptr_t)block % 16)) % 16;
    CHECK_STATUS(specdec_session_init(f->model, 2, aligned, needed - 1, &session), SPECDEC_ERR_BUFFER_TOO_SMALL);
    CHECK_STATUS(specdec_session_init(f->model, 2, aligned, 16, &session), SPECDEC_ERR_BUFFER_TOO_SMALL);
    CHECK_STATUS(specdec_session_init(f->model, 2, aligned, 0, &session), SPECDEC_ERR_BUFFER_TOO_SMALL);
    CHECK_STATUS(specdec_session_init(f->model, 2, aligned + 4, needed, &session), SPECDEC_ERR_MISALIGNED);
    CHECK_STATUS(specdec_session_init(f->model, 2, aligned + 8, needed, &session), SPECDEC_ERR_MISALIGNED);
    CHECK_STATUS(specdec_session_init(f->model, 0, aligned, needed, &session), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK(session == (specdec_session *)SENTINEL);
    CHECK_STATUS(specdec_session_init(f->model, 2, aligned, needed, &session), SPECDEC_OK);

    /* Forward calls outside the context, the vocabulary or the batch. */
    if (session != (specdec_session *)SENTINEL) {
        int32_t bad_token;
        CHECK_STATUS(specdec_forward(session, tokens, 1, (size_t)seq_len, &logits), SPECDEC_ERR_CONTEXT_OVERFLOW);
        CHECK_STATUS(specdec_forward(session, tokens, 2, (size_t)seq_len - 1, &logits),
                     SPECDEC_ERR_CONTEXT_OVERFLOW);
        CHECK_STATUS(specdec_forward(session, tokens, 1, (size_t)-1, &logits), SPECDEC_ERR_CONTEXT_OVERFLOW);
        CHECK_STATUS(specdec_forward(session, tokens, 2, (size_t)-1, &logits), SPECDEC_ERR_CONTEXT_OVERFLOW);
        bad_token = -1;
        CHECK_STATUS(specdec_forward(session, &bad_token, 1, 0, &logits), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
        bad_token = (int32_t)f->config.vocab_size;
        CHECK_STATUS(specdec_forward(session, &bad_token, 1, 0, &logits), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
        bad_token = INT32_MIN;
        CHECK_STATUS(specdec_forward(session, &bad_token, 1, 0, &logits), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
        tokens[1] = -1;
        CHECK_STATUS(specdec_forward(session, tokens, 2, 0, &logits), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
        tokens[1] = 2;
        CHECK_STATUS(specdec_forward(session, tokens, 0, 0, &logits), SPECDEC_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(specdec_forward(session, tokens, 3, 0, &logits), SPECDEC_ERR_INVALID_ARGUMENT);
        CHECK(logits == (const float *)SENTINEL);
        CHECK_STATUS(specdec_forward(session, tokens, 2, (size_t)seq_len - 2, &logits), SPECDEC_OK);
        CHECK(logits != (const float *)SENTINEL);

        /* Thread counts: at most 1024, and 0 means one per core. */
        CHECK_STATUS(specdec_session_set_threads(session, 1025), SPECDEC_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(specdec_session_set_threads(session, 0), SPECDEC_OK);
        CHECK_STATUS(specdec_session_set_threads(session, 3), SPECDEC_OK);
        CHECK_STATUS(specdec_forward(session, tokens, 2, 0, &logits), SPECDEC_OK);

        /* specdec_session_free leaves a session in caller memory in place
         * and only stops its threads, which leak otherwise. */
        specdec_session_free(session);
    }
    free(block);
}

static void check_generate_limits(fixture *f) {
    size_t big_len = 1u << 20;
    char *big = (char *)harness_malloc(big_len);
    char *long_prompt;
    size_t long_len = 4000;
    specdec_sampler *wrong_sampler = NULL;
    specdec_tokenizer *large_tokenizer = NULL;
    int calls = 0;
    clock_t started;
    double seconds;
    size_t i;

    /* A 1 MB prompt cannot fit in 512 positions; that is known from its
     * length before any encoding work. */
    memset(big, 'a', big_len);
    started = clock();
    check_generate_with_prompt(f, f->sampler, big, big_len, SPECDEC_ERR_CONTEXT_OVERFLOW);
    seconds = (double)(clock() - started) / CLOCKS_PER_SEC;
    printf("1 MB prompt rejected in %.3f s of CPU time\n", seconds);
    CHECK(seconds < 1.0);
    free(big);

    /* 4000 bytes of one-letter words encode to more tokens than seq_len. */
    long_prompt = (char *)harness_malloc(long_len);
    for (i = 0; i < long_len; i++) {
        long_prompt[i] = i % 2 == 0 ? 'a' : ' ';
    }
    check_generate_with_prompt(f, f->sampler, long_prompt, long_len, SPECDEC_ERR_CONTEXT_OVERFLOW);
    free(long_prompt);

    /* A prompt that fits runs, and a callback that returns nonzero stops
     * generation after its first piece. */
    check_generate_with_prompt(f, f->sampler, "Once upon a time", 16, SPECDEC_OK);
    CHECK_STATUS(specdec_generate(f->session, f->tokenizer, f->sampler, "", 0, 0, stop_at_once, &calls), SPECDEC_OK);
    CHECK(calls == 1);

    /* The sampler and tokenizer must match the model's vocabulary. */
    harness_require(specdec_sampler_new(511, 1.0f, 0.9f, 1, &wrong_sampler), "specdec_sampler_new");
    check_generate_with_prompt(f, wrong_sampler, "", 0, SPECDEC_ERR_VOCAB_MISMATCH);
    specdec_sampler_free(wrong_sampler);
    harness_require(specdec_tokenizer_from_file(f->large_tokenizer_path, 32000, &large_tokenizer),
                    "specdec_tokenizer_from_file");
    calls = 0;
    CHECK_STATUS(specdec_generate(f->session, large_tokenizer, f->sampler, "", 0, 0, count_calls, &calls),
                 SPECDEC_ERR_VOCAB_MISMATCH);
    CHECK(calls == 0);
    specdec_tokenizer_free(large_tokenizer);
}

static void check_speculative_settings(fixture *f) {
    specdec_spec_params params;
    specdec_spec *spec = (specdec_spec *)SENTINEL;
    specdec_model *large_vocab = NULL;
    specdec_model *short_context = NULL;
    char *large_vocab_path;
    char *short_context_path;

    memset(&params, 0, sizeof params);
    params.k = 4;
    params.lookup_ngram = 2;
    params.temperature = 0.0f;
    params.topp = 0.9f;

    params.k = 0;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.k = 65;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.k = 4;
    params.lookup_ngram = 0;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.lookup_ngram = 2;
    params.temperature = -1.0f;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.temperature = (float)NAN;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.temperature = 0.0f;
    params.topp = 2.0f;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.topp = 0.9f;
    params.threads = 1025;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.threads = 1;
    params.draft_p_min = 2.0f;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.draft_p_min = -0.5f;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.draft_p_min = (float)NAN;
    CHECK_STATUS(specdec_spec_new(f->model, NULL, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    params.draft_p_min = 0.0f;
    CHECK(spec == (specdec_spec *)SENTINEL);

    /* A 32000-token draft for a 512-token target. */
    large_vocab_path = write_v1_checkpoint("vocab-32000.bin", 8, 16, 1, 2, 2, 32000, 16);
    CHECK_STATUS(specdec_model_from_file(large_vocab_path, &large_vocab), SPECDEC_OK);
    CHECK_STATUS(specdec_spec_new(f->model, large_vocab, &params, &spec), SPECDEC_ERR_VOCAB_MISMATCH);
    CHECK(spec == (specdec_spec *)SENTINEL);
    specdec_model_free(large_vocab);
    free(large_vocab_path);

    /* A draft whose context (16) is too short for k = 8: k must stay below
     * half of it. */
    short_context_path = write_v1_checkpoint("seq-len-16.bin", 8, 16, 1, 2, 2, 512, 16);
    CHECK_STATUS(specdec_model_from_file(short_context_path, &short_context), SPECDEC_OK);
    params.k = 8;
    CHECK_STATUS(specdec_spec_new(f->model, short_context, &params, &spec), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK(spec == (specdec_spec *)SENTINEL);
    params.k = 7;
    CHECK_STATUS(specdec_spec_new(f->model, short_context, &params, &spec), SPECDEC_OK);
    if (spec != (specdec_spec *)SENTINEL) {
        specdec_spec_free(spec);
    }
    specdec_model_free(short_context);
    free(short_context_path);
}

static void check_speculative_steps(fixture *f) {
    specdec_spec_params params;
    specdec_spec *spec = NULL;
    int32_t *prompt;
    int32_t out[5] = {-7, -7, -7, -7, -7};
    uint8_t flags[5] = {9, 9, 9, 9, 9};
    size_t n = SIZE_SENTINEL;
    size_t seq_len = f->config.seq_len;
    size_t i;

    memset(&params, 0, sizeof params);
    params.k = 4;
    params.lookup_ngram = 2;
    params.topp = 0.9f;
    harness_require(specdec_spec_new(f->model, NULL, &params, &spec), "specdec_spec_new");

    prompt = (int32_t *)harness_malloc((seq_len + 1) * sizeof(int32_t));
    for (i = 0; i <= seq_len; i++) {
        prompt[i] = i == 0 ? 1 : (int32_t)(i % 400) + 3;
    }
    CHECK_STATUS(specdec_spec_step(spec, 4, out, flags, 5, &n), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_spec_prefill(spec, prompt, 0), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_spec_prefill(spec, prompt, seq_len + 1), SPECDEC_ERR_CONTEXT_OVERFLOW);
    prompt[1] = -1;
    CHECK_STATUS(specdec_spec_prefill(spec, prompt, 3), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
    prompt[1] = (int32_t)f->config.vocab_size;
    CHECK_STATUS(specdec_spec_prefill(spec, prompt, 3), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
    prompt[1] = 4;

    /* A prompt that fills the context leaves room for one final token. */
    CHECK_STATUS(specdec_spec_prefill(spec, prompt, seq_len), SPECDEC_OK);
    CHECK_STATUS(specdec_spec_step(spec, 0, out, flags, 5, &n), SPECDEC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(specdec_spec_step(spec, 4, out, flags, 4, &n), SPECDEC_ERR_BUFFER_TOO_SMALL);
    CHECK(n == SIZE_SENTINEL);
    for (i = 0; i < 5; i++) {
        CHECK(out[i] == -7);
        CHECK(flags[i] == 9);
    }
    CHECK_STATUS(specdec_spec_step(spec, 4, out, flags, 5, &n), SPECDEC_OK);
    CHECK(n == 1);
    CHECK(flags[0] == 0);
    CHECK(out[0] >= 0);
    CHECK(out[0] < (int32_t)f->config.vocab_size);
    n = SIZE_SENTINEL;
    out[0] = -7;
    CHECK_STATUS(specdec_spec_step(spec, 4, out, flags, 5, &n), SPECDEC_ERR_CONTEXT_OVERFLOW);
    CHECK(n == SIZE_SENTINEL);
    CHECK(out[0] == -7);

    /* The last prompt token is first run by a step, so an invalid one is
     * reported there at the latest. */
    prompt[1] = 4;
    prompt[2] = -1;
    {
        specdec_status prefill = specdec_spec_prefill(spec, prompt, 3);
        if (prefill == SPECDEC_OK) {
            CHECK_STATUS(specdec_spec_step(spec, 4, out, flags, 5, &n), SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
        } else {
            CHECK_STATUS(prefill, SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
        }
    }
    CHECK(n == SIZE_SENTINEL);
    free(prompt);
    specdec_spec_free(spec);
}

int main(int argc, char **argv) {
    fixture f;
    specdec_spec_params params;

    if (argc != 5) {
        fprintf(stderr, "usage: bad_input CHECKPOINT TOKENIZER LARGE_TOKENIZER SCRATCH_DIR\n");
        return EXIT_FAILURE;
    }
    memset(&f, 0, sizeof f);
    f.model_path = argv[1];
    f.tokenizer_path = argv[2];
    f.large_tokenizer_path = argv[3];
    scratch_dir = argv[4];

    f.model = harness_load_model(f.model_path, &f.config);
    if (f.config.vocab_size != 512) {
        fprintf(stderr, "%s has %lu tokens; this program needs a 512-token model\n", f.model_path,
                (unsigned long)f.config.vocab_size);
        return EXIT_FAILURE;
    }
    harness_require(specdec_tokenizer_from_file(f.tokenizer_path, 512, &f.tokenizer), "specdec_tokenizer_from_file");
    harness_require(specdec_sampler_new(512, 1.0f, 0.9f, 1, &f.sampler), "specdec_sampler_new");
    harness_require(specdec_session_new(f.model, 4, &f.session), "specdec_session_new");
    memset(&params, 0, sizeof params);
    params.k = 2;
    params.lookup_ngram = 2;
    harness_require(specdec_spec_new(f.model, NULL, &params, &f.spec), "specdec_spec_new");

    check_version_and_messages();
    check_null_pointers(&f);
    check_model_files(&f);
    check_tokenizer_files(&f);
    check_encode_and_decode(&f);
    check_sampler_settings(&f);
    check_sessions(&f);
    check_generate_limits(&f);
    check_speculative_settings(&f);
    check_speculative_steps(&f);

    specdec_spec_free(f.spec);
    specdec_session_free(f.session);
    specdec_sampler_free(f.sampler);
    specdec_tokenizer_free(f.tokenizer);
    specdec_model_free(f.model);
    return harness_finish("bad_input");
}
