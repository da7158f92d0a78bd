/* Checks speculative decoding through the C API against plain greedy
 * decoding. At temperature 0 the tokens that specdec_spec_step emits must be
 * exactly the target's argmax at every position, for draft lengths 1 to 8,
 * with a draft model and with prompt lookup, and the session's statistics
 * must add up.
 *
 * Usage: speculative TARGET DRAFT TOKENIZER TARGET_Q80 DRAFT_Q80
 *
 * TARGET and DRAFT share TOKENIZER's vocabulary; TARGET_Q80 and DRAFT_Q80
 * are Q8_0 versions of them. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "specdec.h"

/* Tokens a round emits at most: k + 1 with k up to 8. */
#define MAX_ROUND 9

/* Tokens generated after the prompt when a run does not fill the context.
 * A prime, so not a multiple of any k + 1: the last round is cut by
 * max_emit. */
#define BUDGET 61

typedef struct {
    const char *label;
    specdec_model *target;
    specdec_model *draft; /* NULL for prompt lookup. */
    size_t k;
    uint8_t adaptive;
    float draft_p_min;
    /* Threads of the forward passes, which must not change any token. */
    size_t threads;
} spec_setup;

/* A prompt and the greedy tokens that follow it until the context is full. */
typedef struct {
    const char *text;
    int32_t *tokens;
    size_t n_tokens;
    int32_t *greedy;
    size_t n_greedy;
} greedy_case;

/* The first index of the largest logit, as run.c's argmax picks it. */
static int32_t argmax(const float *logits, size_t n) {
    size_t best = 0;
    size_t i;
    for (i = 1; i < n; i++) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return (int32_t)best;
}

static int32_t *encode_prompt(const specdec_tokenizer *tokenizer, const char *text, size_t *n_tokens) {
    size_t capacity;
    int32_t *tokens;
    harness_require(specdec_tokenizer_encode(tokenizer, text, strlen(text), true, false, NULL, 0, &capacity),
                    "specdec_tokenizer_encode length query");
    tokens = (int32_t *)harness_malloc(capacity * sizeof(int32_t));
    harness_require(specdec_tokenizer_encode(tokenizer, text, strlen(text), true, false, tokens, capacity, n_tokens),
                    "specdec_tokenizer_encode");
    return tokens;
}

/* Feeds the prompt and then the argmax of each position, one token per
 * forward call. Returns the first `limit` tokens after the prompt in a
 * malloc'd array, or all seq_len - n + 1 of them when `limit` is larger. */
static int32_t *greedy_tokens(specdec_model *target, const int32_t *prompt, size_t n, size_t limit,
                              size_t *count) {
    specdec_config config;
    specdec_session *session;
    const float *logits = NULL;
    int32_t *out;
    int32_t token;
    size_t pos;

    harness_require(specdec_model_config(target, &config), "specdec_model_config");
    harness_require(specdec_session_new(target, 1, &session), "specdec_session_new");
    *count = config.seq_len - n + 1 < limit ? config.seq_len - n + 1 : limit;
    out = (int32_t *)harness_malloc(*count * sizeof(int32_t));
    for (pos = 0; pos + 1 < n + *count; pos++) {
        token = pos < n ? prompt[pos] : out[pos - n];
        harness_require(specdec_forward(session, &token, 1, pos, &logits), "specdec_forward");
        if (pos + 1 >= n) {
            out[pos + 1 - n] = argmax(logits, config.vocab_size);
        }
    }
    specdec_session_free(session);
    return out;
}

typedef struct {
    int32_t tokens[1024];
    size_t n_tokens;
} collected_tokens;

static int32_t collect_token(void *user, int32_t token, const uint8_t *piece, size_t len) {
    collected_tokens *collected = (collected_tokens *)user;
    (void)piece;
    (void)len;
    if (collected->n_tokens < sizeof collected->tokens / sizeof collected->tokens[0]) {
        collected->tokens[collected->n_tokens] = token;
    }
    collected->n_tokens++;
    return 0;
}

/* specdec_generate at temperature 0 must pick the same tokens as the argmax
 * loop, up to a sampled BOS, where it stops. Its `steps` counts positions,
 * prompt included, so n + count - 1 steps generate count tokens. */
static void check_generate_is_greedy(specdec_model *target, const specdec_tokenizer *tokenizer,
                                     const greedy_case *c) {
    specdec_config config;
    specdec_session *session;
    specdec_sampler *sampler;
    collected_tokens collected;
    size_t expected = 0;
    size_t i;

    memset(&collected, 0, sizeof collected);
    harness_require(specdec_model_config(target, &config), "specdec_model_config");
    harness_require(specdec_session_new(target, 4, &session), "specdec_session_new");
    harness_require(specdec_sampler_new(config.vocab_size, 0.0f, 0.9f, 1, &sampler), "specdec_sampler_new");
    CHECK_STATUS(specdec_generate(session, tokenizer, sampler, c->text, strlen(c->text),
                                  c->n_tokens + c->n_greedy - 1, collect_token, &collected),
                 SPECDEC_OK);
    while (expected < c->n_greedy && c->greedy[expected] != 1) {
        expected++;
    }
    /* The callback also receives the prompt tokens after BOS. */
    CHECK(collected.n_tokens == c->n_tokens - 1 + expected);
    for (i = 0; i + 1 < c->n_tokens && i < collected.n_tokens; i++) {
        CHECK(collected.tokens[i] == c->tokens[i + 1]);
    }
    for (i = 0; i < expected && c->n_tokens - 1 + i < collected.n_tokens; i++) {
        if (collected.tokens[c->n_tokens - 1 + i] != c->greedy[i]) {
            fprintf(stderr, "specdec_generate differs from greedy at token %lu after \"%s\"\n", (unsigned long)i,
                    c->text);
            CHECK(collected.tokens[c->n_tokens - 1 + i] == c->greedy[i]);
            break;
        }
    }
    specdec_sampler_free(sampler);
    specdec_session_free(session);
}

/* Runs one speculative session at temperature 0 for `budget` tokens, or
 * until the context is full when `budget` is the whole rest of it, and
 * checks every emitted token and the statistics. */
static void check_speculative_run(const spec_setup *setup, const greedy_case *c, size_t budget) {
    specdec_spec_params params;
    specdec_spec *spec = NULL;
    specdec_spec_stats stats;
    specdec_config config;
    int32_t round_tokens[MAX_ROUND];
    uint8_t accepted_flags[MAX_ROUND];
    size_t produced = 0;
    uint64_t steps = 0;
    uint64_t flagged = 0;
    uint64_t prefill_forwards;
    size_t mismatch = (size_t)-1;
    int bad_flags = 0;
    int bad_counts = 0;

    memset(&params, 0, sizeof params);
    params.k = setup->k;
    params.lookup_ngram = 3;
    params.temperature = 0.0f;
    params.topp = 0.9f;
    params.seed = 7;
    params.draft_p_min = setup->draft_p_min;
    params.adaptive = setup->adaptive;
    params.threads = setup->threads;
    CHECK_STATUS(specdec_spec_new(setup->target, setup->draft, &params, &spec), SPECDEC_OK);
    if (spec == NULL) {
        return;
    }
    CHECK_STATUS(specdec_spec_prefill(spec, c->tokens, c->n_tokens), SPECDEC_OK);

    while (produced < budget) {
        size_t n = 0;
        size_t max_emit = budget - produced;
        size_t i;
        specdec_status status =
            specdec_spec_step(spec, max_emit, round_tokens, accepted_flags, setup->k + 1, &n);
        if (status != SPECDEC_OK) {
            CHECK_STATUS(status, SPECDEC_OK);
            break;
        }
        steps++;
        if (n < 1 || n > setup->k + 1 || n > max_emit) {
            bad_counts++;
            break;
        }
        /* Accepted drafts come first, then at most one token from the target. */
        for (i = 0; i < n; i++) {
            flagged += accepted_flags[i];
            if (accepted_flags[i] > 1 || (i > 0 && accepted_flags[i] > accepted_flags[i - 1])) {
                bad_flags++;
            }
            if (mismatch == (size_t)-1 && round_tokens[i] != c->greedy[produced + i]) {
                mismatch = produced + i;
            }
        }
        produced += n;
    }
    CHECK(bad_counts == 0);
    CHECK(bad_flags == 0);
    CHECK(produced == budget);
    if (mismatch != (size_t)-1) {
        fprintf(stderr, "%s k=%lu: token %lu after \"%s\" differs from greedy\n", setup->label,
                (unsigned long)setup->k, (unsigned long)mismatch, c->text);
    }
    CHECK(mismatch == (size_t)-1);
    harness_require(specdec_model_config(setup->target, &config), "specdec_model_config");
    if (c->n_tokens + budget == config.seq_len + 1) {
        /* The context is full. */
        size_t n = 12345;
        CHECK_STATUS(specdec_spec_step(spec, 1, round_tokens, NULL, setup->k + 1, &n),
                     SPECDEC_ERR_CONTEXT_OVERFLOW);
        CHECK(n == 12345);
    }

    CHECK_STATUS(specdec_spec_get_stats(spec, &stats), SPECDEC_OK);
    CHECK(stats.rounds == steps);
    CHECK(stats.emitted == produced);
    CHECK(stats.accepted == flagged);
    CHECK(stats.accepted <= stats.drafted);
    CHECK(stats.emitted == stats.accepted + stats.rounds);
    CHECK(stats.drafted <= setup->k * stats.rounds);
    /* Prefill runs all prompt tokens but the last, k + 1 per forward call,
     * and every round runs one verify pass. */
    prefill_forwards = (c->n_tokens - 1 + setup->k) / (setup->k + 1);
    CHECK(stats.target_forwards == stats.rounds + prefill_forwards);
    if (setup->draft == NULL) {
        CHECK(stats.draft_forwards == 0);
    } else {
        CHECK(stats.draft_forwards > 0);
        CHECK(stats.accepted > 0);
    }
    printf("%-14s k=%lu prompt=%-3lu tokens=%-4lu rounds=%-4lu drafted=%-4lu accepted=%-4lu\n", setup->label,
           (unsigned long)setup->k, (unsigned long)c->n_tokens, (unsigned long)produced,
           (unsigned long)stats.rounds, (unsigned long)stats.drafted, (unsigned long)stats.accepted);
    specdec_spec_free(spec);
}

/* Sampled speculative decoding is reproducible: the same seed gives the same
 * tokens, and another seed gives other tokens. */
static void check_sampled_runs_repeat(specdec_model *target, specdec_model *draft, const greedy_case *c) {
    int32_t runs[3][BUDGET];
    uint64_t seeds[3] = {11, 11, 12};
    int run;
    for (run = 0; run < 3; run++) {
        specdec_spec_params params;
        specdec_spec *spec = NULL;
        int32_t round_tokens[MAX_ROUND];
        size_t produced = 0;
        memset(&params, 0, sizeof params);
        params.k = 4;
        params.lookup_ngram = 1;
        params.temperature = 1.0f;
        params.topp = 0.9f;
        params.seed = seeds[run];
        params.threads = 1;
        harness_require(specdec_spec_new(target, draft, &params, &spec), "specdec_spec_new");
        harness_require(specdec_spec_prefill(spec, c->tokens, c->n_tokens), "specdec_spec_prefill");
        while (produced < BUDGET) {
            size_t n = 0;
            harness_require(specdec_spec_step(spec, BUDGET - produced, round_tokens, NULL, MAX_ROUND, &n),
                            "specdec_spec_step");
            memcpy(&runs[run][produced], round_tokens, n * sizeof(int32_t));
            produced += n;
        }
        specdec_spec_free(spec);
    }
    CHECK(memcmp(runs[0], runs[1], sizeof runs[0]) == 0);
    CHECK(memcmp(runs[0], runs[2], sizeof runs[0]) != 0);
}

int main(int argc, char **argv) {
    static const char *prompts[] = {
        "",
        "Once upon a time",
        "The bird was very happy. The bird was very happy. The bird was",
    };
    enum { N_PROMPTS = sizeof prompts / sizeof prompts[0] };
    greedy_case cases[N_PROMPTS];
    greedy_case q80_case;
    specdec_model *target;
    specdec_model *draft;
    specdec_model *target_q80;
    specdec_model *draft_q80;
    specdec_config target_config;
    specdec_tokenizer *tokenizer = NULL;
    size_t p;
    size_t k;
    int mode;

    if (argc != 6) {
        fprintf(stderr, "usage: speculative TARGET DRAFT TOKENIZER TARGET_Q80 DRAFT_Q80\n");
        return EXIT_FAILURE;
    }
    target = harness_load_model(argv[1], &target_config);
    draft = harness_load_model(argv[2], NULL);
    harness_require(specdec_tokenizer_from_file(argv[3], target_config.vocab_size, &tokenizer),
                    "specdec_tokenizer_from_file");
    target_q80 = harness_load_model(argv[4], NULL);
    draft_q80 = harness_load_model(argv[5], NULL);

    for (p = 0; p < N_PROMPTS; p++) {
        cases[p].text = prompts[p];
        cases[p].tokens = encode_prompt(tokenizer, prompts[p], &cases[p].n_tokens);
        /* Only the first prompt runs to the end of the context. */
        cases[p].greedy = greedy_tokens(target, cases[p].tokens, cases[p].n_tokens, p == 0 ? (size_t)-1 : BUDGET,
                                        &cases[p].n_greedy);
        check_generate_is_greedy(target, tokenizer, &cases[p]);
    }

    /* Every draft length with both kinds of draft, for a budget of tokens.
     * A few runs from the first prompt go on to the end of the target's
     * context: with the draft model they pass its shorter seq_len. */
    for (mode = 0; mode < 2; mode++) {
        for (k = 1; k <= 8; k++) {
            spec_setup setup;
            setup.label = mode == 0 ? "draft model" : "prompt lookup";
            setup.target = target;
            setup.draft = mode == 0 ? draft : NULL;
            setup.k = k;
            setup.adaptive = 0;
            setup.draft_p_min = 0.0f;
            /* 1, 2 or 3 threads; more than this machine's cores is fine. */
            setup.threads = k % 3 + 1;
            for (p = 0; p < N_PROMPTS; p++) {
                int to_the_end = p == 0 && (k == 8 || (k == 1 && mode == 0));
                check_speculative_run(&setup, &cases[p], to_the_end ? cases[p].n_greedy : BUDGET);
            }
        }
    }

    /* Adaptive draft lengths and an early stop on low draft confidence
     * change the rounds, never the tokens. */
    {
        spec_setup setup;
        setup.target = target;
        setup.k = 8;
        setup.threads = 1;
        for (mode = 0; mode < 2; mode++) {
            setup.draft = mode == 0 ? draft : NULL;
            setup.label = mode == 0 ? "model adaptive" : "lookup adapt.";
            setup.adaptive = 1;
            setup.draft_p_min = 0.0f;
            check_speculative_run(&setup, &cases[1], BUDGET);
            setup.label = mode == 0 ? "model p_min" : "lookup p_min";
            setup.adaptive = 0;
            setup.draft_p_min = 0.5f;
            check_speculative_run(&setup, &cases[1], BUDGET);
        }
    }

    /* The Q8_0 pair matches greedy decoding of the Q8_0 target. */
    q80_case.text = prompts[1];
    q80_case.tokens = encode_prompt(tokenizer, prompts[1], &q80_case.n_tokens);
    q80_case.greedy = greedy_tokens(target_q80, q80_case.tokens, q80_case.n_tokens, BUDGET, &q80_case.n_greedy);
    for (k = 1; k <= 8; k += 3) {
        spec_setup setup;
        setup.label = "q80 pair";
        setup.target = target_q80;
        setup.draft = draft_q80;
        setup.k = k;
        setup.adaptive = 0;
        setup.draft_p_min = 0.0f;
        setup.threads = 0;
        check_speculative_run(&setup, &q80_case, BUDGET);
    }

    check_sampled_runs_repeat(target, draft, &cases[1]);

    for (p = 0; p < N_PROMPTS; p++) {
        free(cases[p].tokens);
        free(cases[p].greedy);
    }
    free(q80_case.tokens);
    free(q80_case.greedy);
    specdec_tokenizer_free(tokenizer);
    specdec_model_free(draft_q80);
    specdec_model_free(target_q80);
    specdec_model_free(draft);
    specdec_model_free(target);
    return harness_finish("speculative");
}
