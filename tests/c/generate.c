/* Generates text through specdec_generate with llama2.c run.c's flags and
 * defaults, and prints what run.c prints to stdout for the same flags.
 *
 * Usage: generate CHECKPOINT [-z TOKENIZER] [-t TEMPERATURE] [-p TOPP]
 *                 [-s SEED] [-n STEPS] [-i PROMPT] [-b MAX_BATCH] [-T THREADS]
 *
 * -b and -T are not run.c's flags, and neither may change the output. -b
 * sets how many prompt tokens one forward call takes (default 1), and -T
 * the threads of the forward passes (default 1, 0 for one per core). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "specdec.h"

static void usage(void) {
    fprintf(stderr, "usage: generate CHECKPOINT [-z TOKENIZER] [-t TEMPERATURE] [-p TOPP] [-s SEED] "
                    "[-n STEPS] [-i PROMPT] [-b MAX_BATCH] [-T THREADS]\n");
    exit(EXIT_FAILURE);
}

/* Prints a piece with run.c's safe_printf rule. */
static int32_t print_piece(void *user, int32_t token, const uint8_t *piece, size_t len) {
    (void)user;
    (void)token;
    fwrite(piece, 1, harness_printable_length(piece, len), stdout);
    return 0;
}

int main(int argc, char **argv) {
    const char *checkpoint_path;
    const char *tokenizer_path = "tokenizer.bin";
    const char *prompt = "";
    float temperature = 1.0f;
    float topp = 0.9f;
    long long seed = 0;
    long steps = 256;
    long max_batch = 1;
    long threads = 1;
    specdec_model *model;
    specdec_config config;
    specdec_tokenizer *tokenizer = NULL;
    specdec_sampler *sampler = NULL;
    specdec_session *session = NULL;
    specdec_status status;
    int i;

    if (argc < 2) {
        usage();
    }
    checkpoint_path = argv[1];
    for (i = 2; i < argc; i += 2) {
        const char *flag = argv[i];
        const char *value;
        if (i + 1 >= argc || flag[0] != '-' || strlen(flag) != 2) {
            usage();
        }
        value = argv[i + 1];
        switch (flag[1]) {
        case 'z':
            tokenizer_path = value;
            break;
        case 't':
            temperature = (float)atof(value);
            break;
        case 'p':
            topp = (float)atof(value);
            break;
        case 's':
            seed = atoll(value);
            break;
        case 'n':
            steps = atol(value);
            break;
        case 'i':
            prompt = value;
            break;
        case 'b':
            max_batch = atol(value);
            break;
        case 'T':
            threads = atol(value);
            break;
        default:
            usage();
        }
    }
    /* run.c's corrections of out-of-range values. */
    if (seed <= 0) {
        seed = (long long)time(NULL);
    }
    if (temperature < 0.0f) {
        temperature = 0.0f;
    }
    if (topp < 0.0f || topp > 1.0f) {
        topp = 0.9f;
    }
    if (steps < 0) {
        steps = 0;
    }
    if (max_batch < 1 || threads < 0) {
        usage();
    }

    model = harness_load_model(checkpoint_path, &config);
    status = specdec_tokenizer_from_file(tokenizer_path, config.vocab_size, &tokenizer);
    if (status == SPECDEC_OK) {
        status = specdec_sampler_new(config.vocab_size, temperature, topp, (uint64_t)seed, &sampler);
    }
    if (status == SPECDEC_OK) {
        status = specdec_session_new(model, (size_t)max_batch, &session);
    }
    if (status == SPECDEC_OK) {
        status = specdec_session_set_threads(session, (size_t)threads);
    }
    if (status == SPECDEC_OK) {
        status = specdec_generate(session, tokenizer, sampler, prompt, strlen(prompt), (size_t)steps, print_piece,
                                  NULL);
    }
    if (status == SPECDEC_OK) {
        printf("\n");
    } else {
        fprintf(stderr, "generate: %s\n", specdec_status_message((int32_t)status));
    }
    specdec_session_free(session);
    specdec_sampler_free(sampler);
    specdec_tokenizer_free(tokenizer);
    specdec_model_free(model);
    return status == SPECDEC_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
