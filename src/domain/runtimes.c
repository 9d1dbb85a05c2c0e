/*
 * runtimes.c — the runtimes table and its lookups.
 *
 * Binaries are the paths Debian 12 installs (python3.11, ruby3.1, Go under
 * /usr/lib/go-1.19); the node offers a version only when its binary exists
 * on the host, so listing a version here promises nothing about a machine.
 */
#include "runtimes.h"

#include <string.h>

const struct runtime runtime_table[] = {
    {
        .lang = "python",
        .file_name = "main.py",
        .ext = "py",
        .example = "print(\"hello\")\n",
        .run_args = {"-u"},
        .env = {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"},
        .versions =
            {
                {"3.11",
                 "python:3.11-slim",
                 "/usr/bin/python3.11",
                 {"python", "python3", "python3.11"},
                 "python3"},
                {"3.12",
                 "python:3.12-slim",
                 "/usr/bin/python3.12",
                 {"python", "python3", "python3.12"},
                 "python3"},
                {"3.10",
                 "python:3.10-slim",
                 "/usr/bin/python3.10",
                 {"python", "python3", "python3.10"},
                 "python3"},
                {"3.9",
                 "python:3.9-slim",
                 "/usr/bin/python3.9",
                 {"python", "python3", "python3.9"},
                 "python3"},
            },
    },
    {
        .lang = "node",
        .file_name = "main.js",
        .ext = "js",
        .example = "console.log(\"hello\");\n",
        .versions =
            {
                {"20", "node:20-slim", "/usr/bin/node", {"node", "nodejs"}, "node"},
            },
    },
    {
        .lang = "ruby",
        .file_name = "main.rb",
        .ext = "rb",
        .example = "puts \"hello\"\n",
        .versions =
            {
                {"3.1", "ruby:3.1-slim", "/usr/bin/ruby3.1", {"ruby", "ruby3.1"}, "irb"},
            },
    },
    {
        .lang = "bash",
        .file_name = "main.sh",
        .ext = "sh",
        .example = "echo hello\n",
        .versions =
            {
                {"5.2", "bash:5.2", "/usr/bin/bash", {"bash"}, "bash"},
            },
    },
    {
        .lang = "go",
        .file_name = "main.go",
        .ext = "go",
        .example = "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n",
        .run_args = {"run"},
        .env = {"GOCACHE=/tmp/.gocache", "GOPATH=/tmp/go", "GOFLAGS=-mod=mod", "CGO_ENABLED=0"},
        .versions =
            {
                {"1.19", "golang:1.19", "/usr/lib/go-1.19/bin/go", {"go"}, "bash"},
            },
    },
    {0},
};

size_t runtime_count(void)
{
    return sizeof(runtime_table) / sizeof(runtime_table[0]) - 1;
}

const struct runtime *runtime_find(const char *lang)
{
    if (!lang)
        return NULL;
    for (const struct runtime *r = runtime_table; r->lang; r++)
        if (strcmp(r->lang, lang) == 0)
            return r;
    return NULL;
}

const struct runtime_version *runtime_find_version(const char *lang, const char *version,
                                                   const struct runtime **rt)
{
    const struct runtime *r = runtime_find(lang);
    if (!r || !version)
        return NULL;
    for (const struct runtime_version *v = r->versions; v->version; v++)
        if (strcmp(v->version, version) == 0) {
            if (rt)
                *rt = r;
            return v;
        }
    return NULL;
}

const struct runtime_version *runtime_by_image(const char *image, const struct runtime **rt)
{
    static const char *const prefixes[] = {"docker.io/library/", "docker.io/", "library/"};
    if (!image)
        return NULL;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(image, prefixes[i], n) == 0) {
            image += n;
            break;
        }
    }
    for (const struct runtime *r = runtime_table; r->lang; r++)
        for (const struct runtime_version *v = r->versions; v->version; v++)
            if (strcmp(v->image, image) == 0) {
                if (rt)
                    *rt = r;
                return v;
            }
    return NULL;
}
