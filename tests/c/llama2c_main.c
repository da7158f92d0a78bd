/* A program in the style of llama2.c's run.c, written only against
 * specdec_llama2c.h: it parses run.c's flags and generates one token per
 * forward() call with sample(), decode() and safe_printf(). For the same
 * flags it prints what run.c prints to stdout.
 *
 * Usage: llama2c_main CHECKPOINT [-z TOKENIZER] [-t TEMPERATURE] [-p TOPP]
 *                     [-s SEED] [-n STEPS] [-i PROMPT] [-m generate] */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "specdec_llama2c.h"

static void print_usage_and_exit(void) {
    fprintf(stderr, "usage: llama2c_main CHECKPOINT [-z TOKENIZER] [-t TEMPERATURE] [-p TOPP] [-s SEED] "
                    "[-n STEPS] [-i PROMPT] [-m generate]\n");
    exit(EXIT_FAILURE);
}

static void generate(Transformer *transformer, Tokenizer *tokenizer, Sampler *sampler, char *prompt, int steps) {
    char no_prompt[] = "";
    int *prompt_tokens;
    int n_prompt_tokens = 0;
    int token;
    int pos;

    if (prompt == NULL) {
        prompt = no_prompt;
    }
    prompt_tokens = (int *)malloc((strlen(prompt) + 3) * sizeof(int));
    if (prompt_tokens == NULL) {
        fprintf(stderr, "out of memory for the prompt tokens\n");
        exit(EXIT_FAILURE);
    }
    encode(tokenizer, prompt, 1, 0, prompt_tokens, &n_prompt_tokens);
    if (n_prompt_tokens < 1) {
        fprintf(stderr, "the encoded prompt is empty; it should start with BOS\n");
        exit(EXIT_FAILURE);
    }

    /* Each step runs the current token and picks the next one: the next
     * prompt token while the prompt lasts, then a sampled one. */
    token = prompt_tokens[0];
    for (pos = 0; pos < steps; pos++) {
        float *logits = forward(transformer, token, pos);
        int next = pos + 1 < n_prompt_tokens ? prompt_tokens[pos + 1] : sample(sampler, logits);
        if (next == 1) {
            break; /* BOS starts a new story, so this one is over. */
        }
        safe_printf(decode(tokenizer, token, next));
        fflush(stdout);
        token = next;
    }
    printf("\n");
    free(prompt_tokens);
}

int main(int argc, char *argv[]) {
    char default_tokenizer[] = "tokenizer.bin";
    char *checkpoint_path;
    char *tokenizer_path = default_tokenizer;
    char *prompt = NULL;
    char *mode = NULL;
    float temperature = 1.0f;
    float topp = 0.9f;
    int steps = 256;
    unsigned long long rng_seed = 0;
    Transformer transformer;
    Tokenizer tokenizer;
    Sampler sampler;
    int i;

    if (argc < 2) {
        print_usage_and_exit();
    }
    checkpoint_path = argv[1];
    for (i = 2; i < argc; i += 2) {
        if (i + 1 >= argc || argv[i][0] != '-' || strlen(argv[i]) != 2) {
            print_usage_and_exit();
        }
        switch (argv[i][1]) {
        case 't':
            temperature = (float)atof(argv[i + 1]);
            break;
        case 'p':
            topp = (float)atof(argv[i + 1]);
            break;
        case 's':
            rng_seed = (unsigned long long)atoll(argv[i + 1]);
            break;
        case 'n':
            steps = atoi(argv[i + 1]);
            break;
        case 'i':
            prompt = argv[i + 1];
            break;
        case 'z':
            tokenizer_path = argv[i + 1];
            break;
        case 'm':
            mode = argv[i + 1];
            break;
        default:
            print_usage_and_exit();
        }
    }
    if (mode != NULL && strcmp(mode, "generate") != 0) {
        fprintf(stderr, "mode %s is not supported; only generate is\n", mode);
        return EXIT_FAILURE;
    }
    if (rng_seed == 0) {
        rng_seed = (unsigned long long)time(NULL);
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

    build_transformer(&transformer, checkpoint_path);
    if (steps == 0 || steps > transformer.config.seq_len) {
        steps = transformer.config.seq_len;
    }
    build_tokenizer(&tokenizer, tokenizer_path, transformer.config.vocab_size);
    build_sampler(&sampler, transformer.config.vocab_size, temperature, topp, rng_seed);

    generate(&transformer, &tokenizer, &sampler, prompt, steps);

    free_sampler(&sampler);
    free_tokenizer(&tokenizer);
    free_transformer(&transformer);
    return EXIT_SUCCESS;
}
