#include "harness.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_count;
static int failure_count;

void harness_check(int ok, const char *file, int line, const char *expression) {
    check_count++;
    if (!ok) {
        failure_count++;
        fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expression);
    }
}

void harness_check_status(specdec_status found, specdec_status expected, const char *file, int line,
                          const char *call) {
    check_count++;
    if (found != expected) {
        failure_count++;
        fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s\n", file, line, call,
                harness_status_name((int)found), specdec_status_message((int32_t)found),
                harness_status_name((int)expected));
    }
}

int harness_finish(const char *program) {
    printf("%s: %d checks, %d failures\n", program, check_count, failure_count);
    return failure_count == 0 ? 0 : 1;
}

const char *harness_status_name(int status) {
    switch (status) {
    case SPECDEC_OK:
        return "SPECDEC_OK";
    case SPECDEC_ERR_NULL_POINTER:
        return "SPECDEC_ERR_NULL_POINTER";
    case SPECDEC_ERR_INVALID_ARGUMENT:
        return "SPECDEC_ERR_INVALID_ARGUMENT";
    case SPECDEC_ERR_IO:
        return "SPECDEC_ERR_IO";
    case SPECDEC_ERR_TRUNCATED:
        return "SPECDEC_ERR_TRUNCATED";
    case SPECDEC_ERR_BAD_FORMAT:
        return "SPECDEC_ERR_BAD_FORMAT";
    case SPECDEC_ERR_INVALID_CONFIG:
        return "SPECDEC_ERR_INVALID_CONFIG";
    case SPECDEC_ERR_MISALIGNED:
        return "SPECDEC_ERR_MISALIGNED";
    case SPECDEC_ERR_VOCAB_MISMATCH:
        return "SPECDEC_ERR_VOCAB_MISMATCH";
    case SPECDEC_ERR_BUFFER_TOO_SMALL:
        return "SPECDEC_ERR_BUFFER_TOO_SMALL";
    case SPECDEC_ERR_CONTEXT_OVERFLOW:
        return "SPECDEC_ERR_CONTEXT_OVERFLOW";
    case SPECDEC_ERR_TOKEN_OUT_OF_RANGE:
        return "SPECDEC_ERR_TOKEN_OUT_OF_RANGE";
    case SPECDEC_ERR_INTERNAL:
        return "SPECDEC_ERR_INTERNAL";
    case SPECDEC_ERR_OUT_OF_MEMORY:
        return "SPECDEC_ERR_OUT_OF_MEMORY";
    default:
        return "an unknown status";
    }
}

void harness_require(specdec_status status, const char *what) {
    if (status != SPECDEC_OK) {
        fprintf(stderr, "%s failed: %s (%s)\n", what, harness_status_name((int)status),
                specdec_status_message((int32_t)status));
        exit(EXIT_FAILURE);
    }
}

void *harness_malloc(size_t size) {
    void *p = malloc(size == 0 ? 1 : size);
    if (p == NULL) {
        fprintf(stderr, "out of memory allocating %lu bytes\n", (unsigned long)size);
        exit(EXIT_FAILURE);
    }
    return p;
}

unsigned char *harness_read_file(const char *path, size_t *len) {
    FILE *file = fopen(path, "rb");
    unsigned char *data;
    long size;
    if (file == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(EXIT_FAILURE);
    }
    if (fseek(file, 0, SEEK_END) != 0 || (size = ftell(file)) < 0 || fseek(file, 0, SEEK_SET) != 0) {
        fprintf(stderr, "cannot find the size of %s\n", path);
        exit(EXIT_FAILURE);
    }
    data = (unsigned char *)harness_malloc((size_t)size);
    if (fread(data, 1, (size_t)size, file) != (size_t)size) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(EXIT_FAILURE);
    }
    fclose(file);
    *len = (size_t)size;
    return data;
}

void harness_write_file(const char *path, const void *data, size_t len) {
    FILE *file = fopen(path, "wb");
    if (file == NULL || fwrite(data, 1, len, file) != len || fclose(file) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(EXIT_FAILURE);
    }
}

char *harness_join_path(const char *dir, const char *name) {
    size_t dir_len = strlen(dir);
    size_t name_len = strlen(name);
    char *path = (char *)harness_malloc(dir_len + 1 + name_len + 1);
    memcpy(path, dir, dir_len);
    path[dir_len] = '/';
    memcpy(path + dir_len + 1, name, name_len + 1);
    return path;
}

specdec_model *harness_load_model(const char *path, specdec_config *config) {
    specdec_model *model = NULL;
    specdec_status status = specdec_model_from_file(path, &model);
    if (status != SPECDEC_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, specdec_status_message((int32_t)status));
        exit(EXIT_FAILURE);
    }
    if (config != NULL) {
        harness_require(specdec_model_config(model, config), "specdec_model_config");
    }
    return model;
}

size_t harness_printable_length(const uint8_t *piece, size_t len) {
    const void *nul = memchr(piece, 0, len);
    if (nul != NULL) {
        len = (size_t)((const uint8_t *)nul - piece);
    }
    if (len == 1 && !(isprint(piece[0]) || isspace(piece[0]))) {
        return 0;
    }
    return len;
}

void harness_text_append(harness_text *text, const void *bytes, size_t len) {
    if (text->len + len + 1 > text->capacity) {
        size_t capacity = text->capacity == 0 ? 256 : text->capacity;
        char *grown;
        while (capacity < text->len + len + 1) {
            capacity *= 2;
        }
        grown = (char *)realloc(text->data, capacity);
        if (grown == NULL) {
            fprintf(stderr, "out of memory growing a text buffer to %lu bytes\n", (unsigned long)capacity);
            exit(EXIT_FAILURE);
        }
        text->data = grown;
        text->capacity = capacity;
    }
    if (len > 0) {
        memcpy(text->data + text->len, bytes, len);
    }
    text->len += len;
    text->data[text->len] = '\0';
}

void harness_text_free(harness_text *text) {
    free(text->data);
    text->data = NULL;
    text->len = 0;
    text->capacity = 0;
}
