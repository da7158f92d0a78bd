/* Compiled but not linked: specdec_llama2c.h must compile as the only
 * include of a C99 file, twice over, and run.c's functions must keep their
 * exact types. */

#include "specdec_llama2c.h"
#include "specdec_llama2c.h"

void (*const header_alone_build_transformer)(Transformer *, char *) = build_transformer;
void (*const header_alone_free_transformer)(Transformer *) = free_transformer;
float *(*const header_alone_forward)(Transformer *, int, int) = forward;
void (*const header_alone_build_tokenizer)(Tokenizer *, char *, int) = build_tokenizer;
void (*const header_alone_free_tokenizer)(Tokenizer *) = free_tokenizer;
void (*const header_alone_encode)(Tokenizer *, char *, int8_t, int8_t, int *, int *) = encode;
char *(*const header_alone_decode)(Tokenizer *, int, int) = decode;
void (*const header_alone_safe_printf)(char *) = safe_printf;
void (*const header_alone_build_sampler)(Sampler *, int, float, float, unsigned long long) = build_sampler;
void (*const header_alone_free_sampler)(Sampler *) = free_sampler;
int (*const header_alone_sample)(Sampler *, float *) = sample;
