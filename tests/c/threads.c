/* Checks that models and a tokenizer can be shared between threads. First
 * two threads generate at the same time over one model and one tokenizer,
 * each with its own session and sampler. Then two speculative sessions share
 * one target and one draft model. Every output must equal the output of the
 * same run on one thread.
 *
 * Usage: threads TARGET DRAFT TOKENIZER */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "specdec.h"

/* Number of times each pair of threads runs. More rounds give more
 * interleavings. */
#define ROUNDS 4

/* Tokens each speculative run generates after its prompt. */
#define SPEC_TOKENS 200

typedef struct {
    /* Shared, read-only. */
    const specdec_model *model;
    const specdec_model *draft;
    const specdec_tokenizer *tokenizer;
    pthread_barrier_t *start;
    /* Settings of this run. */
    const char *prompt;
    float temperature;
    float topp;
    uint64_t seed;
    /* Threads of each speculative session's own forward pool. */
    size_t pool_threads;
    /* Results. */
    specdec_status status;
    harness_text text;
    int32_t tokens[SPEC_TOKENS];
} job;

static int32_t append_piece(void *user, int32_t token, const uint8_t *piece, size_t len) {
    (void)token;
    harness_text_append((harness_text *)user, piece, len);
    return 0;
}

static void wait_for_start(job *j) {
    if (j->start != NULL) {
        int result = pthread_barrier_wait(j->start);
        if (result != 0 && result != PTHREAD_BARRIER_SERIAL_THREAD) {
            fprintf(stderr, "pthread_barrier_wait failed: %d\n", result);
            exit(EXIT_FAILURE);
        }
    }
}

/* Generates 200 positions with specdec_generate into j->text. */
static void *run_generate(void *arg) {
    job *j = (job *)arg;
    specdec_config config;
    specdec_session *session = NULL;
    specdec_sampler *sampler = NULL;

    j->status = specdec_model_config(j->model, &config);
    if (j->status == SPECDEC_OK) {
        j->status = specdec_session_new(j->model, 4, &session);
    }
    if (j->status == SPECDEC_OK) {
        j->status = specdec_sampler_new(config.vocab_size, j->temperature, j->topp, j->seed, &sampler);
    }
    wait_for_start(j);
    if (j->status == SPECDEC_OK) {
        j->status = specdec_generate(session, j->tokenizer, sampler, j->prompt, strlen(j->prompt), 200,
                                     append_piece, &j->text);
    }
    specdec_sampler_free(sampler);
    specdec_session_free(session);
    return NULL;
}

/* Generates SPEC_TOKENS tokens with a speculative session into j->tokens. */
static void *run_speculative(void *arg) {
    job *j = (job *)arg;
    specdec_spec_params params;
    specdec_spec *spec = NULL;
    int32_t prompt[64];
    int32_t round_tokens[5];
    size_t n_prompt = 0;
    size_t produced = 0;

    memset(&params, 0, sizeof params);
    params.k = 4;
    params.lookup_ngram = 2;
    params.temperature = j->temperature;
    params.topp = j->topp;
    params.seed = j->seed;
    params.threads = j->pool_threads;
    j->status = specdec_tokenizer_encode(j->tokenizer, j->prompt, strlen(j->prompt), true, false, prompt,
                                         sizeof prompt / sizeof prompt[0], &n_prompt);
    if (j->status == SPECDEC_OK) {
        j->status = specdec_spec_new(j->model, j->draft, &params, &spec);
    }
    wait_for_start(j);
    if (j->status == SPECDEC_OK) {
        j->status = specdec_spec_prefill(spec, prompt, n_prompt);
    }
    while (j->status == SPECDEC_OK && produced < SPEC_TOKENS) {
        size_t n = 0;
        j->status = specdec_spec_step(spec, SPEC_TOKENS - produced, round_tokens, NULL, 5, &n);
        if (j->status == SPECDEC_OK) {
            memcpy(&j->tokens[produced], round_tokens, n * sizeof(int32_t));
            produced += n;
        }
    }
    specdec_spec_free(spec);
    return NULL;
}

static void reset(job *j) {
    harness_text_free(&j->text);
    memset(j->tokens, 0, sizeof j->tokens);
    j->status = SPECDEC_ERR_INTERNAL;
}

/* Runs both jobs on two threads at once, released together by a barrier. */
static void run_pair(void *(*body)(void *), job *a, job *b) {
    pthread_barrier_t start;
    pthread_t threads[2];
    job *jobs[2];
    int i;

    jobs[0] = a;
    jobs[1] = b;
    if (pthread_barrier_init(&start, NULL, 2) != 0) {
        fprintf(stderr, "pthread_barrier_init failed\n");
        exit(EXIT_FAILURE);
    }
    for (i = 0; i < 2; i++) {
        reset(jobs[i]);
        jobs[i]->start = &start;
        if (pthread_create(&threads[i], NULL, body, jobs[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(EXIT_FAILURE);
        }
    }
    for (i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        jobs[i]->start = NULL;
    }
    pthread_barrier_destroy(&start);
}

static void init_job(job *j, const specdec_model *model, const specdec_model *draft,
                     const specdec_tokenizer *tokenizer, const char *prompt, float temperature, float topp,
                     uint64_t seed) {
    memset(j, 0, sizeof *j);
    j->model = model;
    j->draft = draft;
    j->tokenizer = tokenizer;
    j->prompt = prompt;
    j->temperature = temperature;
    j->topp = topp;
    j->seed = seed;
}

int main(int argc, char **argv) {
    specdec_model *target;
    specdec_model *draft;
    specdec_config config;
    specdec_tokenizer *tokenizer = NULL;
    job first;
    job second;
    harness_text expected_first = {NULL, 0, 0};
    harness_text expected_second = {NULL, 0, 0};
    int32_t expected_first_tokens[SPEC_TOKENS];
    int32_t expected_second_tokens[SPEC_TOKENS];
    int round;

    if (argc != 4) {
        fprintf(stderr, "usage: threads TARGET DRAFT TOKENIZER\n");
        return EXIT_FAILURE;
    }
    target = harness_load_model(argv[1], &config);
    draft = harness_load_model(argv[2], NULL);
    harness_require(specdec_tokenizer_from_file(argv[3], config.vocab_size, &tokenizer),
                    "specdec_tokenizer_from_file");

    /* Plain generation: the references come from runs on this thread. */
    init_job(&first, target, NULL, tokenizer, "Once upon a time", 1.0f, 0.9f, 42);
    init_job(&second, target, NULL, tokenizer, "The dog", 0.8f, 0.95f, 7);
    run_generate(&first);
    run_generate(&second);
    CHECK_STATUS(first.status, SPECDEC_OK);
    CHECK_STATUS(second.status, SPECDEC_OK);
    CHECK(first.text.len > 0);
    CHECK(second.text.len > 0);
    CHECK(first.text.len != second.text.len || memcmp(first.text.data, second.text.data, first.text.len) != 0);
    harness_text_append(&expected_first, first.text.data, first.text.len);
    harness_text_append(&expected_second, second.text.data, second.text.len);
    for (round = 0; round < ROUNDS; round++) {
        run_pair(run_generate, &first, &second);
        CHECK_STATUS(first.status, SPECDEC_OK);
        CHECK_STATUS(second.status, SPECDEC_OK);
        CHECK(first.text.len == expected_first.len &&
              memcmp(first.text.data, expected_first.data, expected_first.len) == 0);
        CHECK(second.text.len == expected_second.len &&
              memcmp(second.text.data, expected_second.data, expected_second.len) == 0);
    }
    printf("generate on two threads: %d rounds\n", ROUNDS);

    /* Speculative sessions sharing the target and the draft model. */
    harness_text_free(&first.text);
    harness_text_free(&second.text);
    init_job(&first, target, draft, tokenizer, "Once upon a time", 0.8f, 0.9f, 1);
    init_job(&second, target, draft, tokenizer, "Lily", 1.0f, 0.95f, 2);
    first.pool_threads = 1;
    second.pool_threads = 1;
    run_speculative(&first);
    run_speculative(&second);
    CHECK_STATUS(first.status, SPECDEC_OK);
    CHECK_STATUS(second.status, SPECDEC_OK);
    memcpy(expected_first_tokens, first.tokens, sizeof expected_first_tokens);
    memcpy(expected_second_tokens, second.tokens, sizeof expected_second_tokens);
    CHECK(memcmp(expected_first_tokens, expected_second_tokens, sizeof expected_first_tokens) != 0);
    /* A pool of its own for one session; the thread count must not change
     * its tokens. */
    second.pool_threads = 2;
    for (round = 0; round < ROUNDS; round++) {
        run_pair(run_speculative, &first, &second);
        CHECK_STATUS(first.status, SPECDEC_OK);
        CHECK_STATUS(second.status, SPECDEC_OK);
        CHECK(memcmp(first.tokens, expected_first_tokens, sizeof expected_first_tokens) == 0);
        CHECK(memcmp(second.tokens, expected_second_tokens, sizeof expected_second_tokens) == 0);
    }
    printf("speculative on two threads: %d rounds\n", ROUNDS);

    harness_text_free(&first.text);
    harness_text_free(&second.text);
    harness_text_free(&expected_first);
    harness_text_free(&expected_second);
    specdec_tokenizer_free(tokenizer);
    specdec_model_free(draft);
    specdec_model_free(target);
    return harness_finish("threads");
}
