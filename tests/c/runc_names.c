/* A program that defines its own functions under the names llama2.c's run.c
 * gives its global functions, and calls specdec through the C API. It links
 * with libspecdec.a only if the library defines none of these names, so
 * that a run.c-based program can link specdec beside its own code.
 *
 * The stubs do token-free arithmetic so that the compiler keeps them. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specdec.h"

float scratch[4];

void rmsnorm(float *o, float *x, float *weight, int size) {
    int i;
    for (i = 0; i < size; i++) {
        o[i] = x[i] * weight[i];
    }
}

void softmax(float *x, int size) {
    int i;
    for (i = 0; i < size; i++) {
        x[i] = 1.0f / (float)size;
    }
}

void matmul(float *xout, float *x, float *w, int n, int d) {
    int i;
    for (i = 0; i < d; i++) {
        xout[i] = n > 0 ? x[0] * w[i] : 0.0f;
    }
}

float *forward(void *transformer, int token, int pos) {
    (void)transformer;
    scratch[0] = (float)(token + pos);
    return scratch;
}

void encode(void *tokenizer, char *text, signed char bos, signed char eos, int *tokens, int *n_tokens) {
    (void)tokenizer;
    (void)text;
    tokens[0] = bos;
    tokens[1] = eos;
    *n_tokens = 2;
}

char *decode(void *tokenizer, int prev_token, int token) {
    static char piece[] = "stub";
    (void)tokenizer;
    (void)prev_token;
    (void)token;
    return piece;
}

int sample(void *sampler, float *logits) {
    (void)sampler;
    return logits[0] > 0.0f ? 1 : 0;
}

int sample_argmax(float *probabilities, int n) {
    return n > 0 && probabilities[0] >= 0.0f ? 0 : -1;
}

int sample_mult(float *probabilities, int n, float coin) {
    return n > 0 && probabilities[0] > coin ? 0 : n - 1;
}

unsigned int random_u32(unsigned long long *state) {
    *state += 1;
    return (unsigned int)*state;
}

float random_f32(unsigned long long *state) {
    return (float)(random_u32(state) >> 8) / 16777216.0f;
}

void safe_printf(char *piece) {
    fputs(piece, stdout);
}

void build_transformer(void *t, char *checkpoint_path) {
    (void)t;
    (void)checkpoint_path;
}

void free_transformer(void *t) {
    (void)t;
}

void build_tokenizer(void *t, char *tokenizer_path, int vocab_size) {
    (void)t;
    (void)tokenizer_path;
    (void)vocab_size;
}

void free_tokenizer(void *t) {
    (void)t;
}

void build_sampler(void *s, int vocab_size, float temperature, float topp, unsigned long long rng_seed) {
    (void)s;
    (void)vocab_size;
    (void)temperature;
    (void)topp;
    (void)rng_seed;
}

void free_sampler(void *s) {
    (void)s;
}

void generate(void *transformer, void *tokenizer, void *sampler, char *prompt, int steps) {
    (void)transformer;
    (void)tokenizer;
    (void)sampler;
    (void)prompt;
    (void)steps;
}

long time_in_ms(void) {
    return 0;
}

void error_usage(void) {
    exit(EXIT_FAILURE);
}

int main(void) {
    float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    float w[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    float out[4];
    int tokens[2];
    int n_tokens = 0;
    char text[] = "";
    unsigned long long state = 1;
    specdec_model *model = NULL;
    int failures = 0;

    rmsnorm(out, x, w, 4);
    softmax(out, 4);
    matmul(out, x, w, 4, 4);
    encode(NULL, text, 1, 0, tokens, &n_tokens);
    failures += n_tokens != 2 || tokens[0] != 1;
    failures += forward(NULL, 2, 3)[0] != 5.0f;
    failures += strcmp(decode(NULL, 1, 2), "stub") != 0;
    failures += sample(NULL, x) != 1;
    failures += sample_argmax(x, 4) != 0;
    failures += sample_mult(x, 4, 0.5f) != 0;
    failures += random_f32(&state) < 0.0f;
    failures += time_in_ms() != 0;

    /* Pull the library's code in through several entry points. */
    failures += strcmp(specdec_version(), SPECDEC_VERSION) != 0;
    failures += specdec_model_from_file(NULL, &model) != SPECDEC_ERR_NULL_POINTER;
    failures += specdec_tokenizer_from_file(NULL, 512, NULL) != SPECDEC_ERR_NULL_POINTER;
    failures += specdec_sampler_new(512, 1.0f, 0.9f, 1, NULL) != SPECDEC_ERR_NULL_POINTER;
    failures += specdec_session_new(NULL, 1, NULL) != SPECDEC_ERR_NULL_POINTER;
    failures += specdec_spec_new(NULL, NULL, NULL, NULL) != SPECDEC_ERR_NULL_POINTER;
    failures += specdec_generate(NULL, NULL, NULL, NULL, 0, 0, NULL, NULL) != SPECDEC_ERR_NULL_POINTER;

    printf("runc_names: %d failures\n", failures);
    return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
