// Includes both headers in a C++11 program, checks that run.c's functions
// keep their exact signatures under C++'s stricter pointer rules, and calls
// the library through extern "C" linkage.

#include <cstdio>
#include <cstring>

#include "specdec.h"
#include "specdec_llama2c.h"

int main() {
    // Each initialization compiles only when the function's type is run.c's.
    void (*build_transformer_fn)(Transformer *, char *) = build_transformer;
    void (*free_transformer_fn)(Transformer *) = free_transformer;
    float *(*forward_fn)(Transformer *, int, int) = forward;
    void (*build_tokenizer_fn)(Tokenizer *, char *, int) = build_tokenizer;
    void (*free_tokenizer_fn)(Tokenizer *) = free_tokenizer;
    void (*encode_fn)(Tokenizer *, char *, int8_t, int8_t, int *, int *) = encode;
    char *(*decode_fn)(Tokenizer *, int, int) = decode;
    void (*safe_printf_fn)(char *) = safe_printf;
    void (*build_sampler_fn)(Sampler *, int, float, float, unsigned long long) = build_sampler;
    void (*free_sampler_fn)(Sampler *) = free_sampler;
    int (*sample_fn)(Sampler *, float *) = sample;
    Transformer transformer = Transformer();
    specdec_model *model = nullptr;

    (void)build_transformer_fn;
    (void)free_transformer_fn;
    (void)forward_fn;
    (void)build_tokenizer_fn;
    (void)free_tokenizer_fn;
    (void)encode_fn;
    (void)decode_fn;
    (void)safe_printf_fn;
    (void)build_sampler_fn;
    (void)free_sampler_fn;
    (void)sample_fn;

    const char *version = specdec_version();
    std::printf("specdec %s\n", version);
    if (std::strcmp(version, SPECDEC_VERSION) != 0) {
        std::fprintf(stderr, "specdec_version() is %s but SPECDEC_VERSION is %s\n", version, SPECDEC_VERSION);
        return 1;
    }
    if (specdec_model_from_file(nullptr, &model) != SPECDEC_ERR_NULL_POINTER || model != nullptr ||
        transformer.specdec_model_handle != nullptr) {
        std::fprintf(stderr, "specdec_model_from_file(nullptr, ...) did not return SPECDEC_ERR_NULL_POINTER\n");
        return 1;
    }
    return 0;
}
