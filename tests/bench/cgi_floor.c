/* cgi_floor.c - the start of a CGI program that links libcurl and does nothing else: the floor
 * under llmproxy's plain-CGI mode (scripts/bench.py times it beside llmproxy.fcgi) */
/* SPDX-License-Identifier: MIT */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    /* "init": also curl_global_init, as llmproxy does */
    if (argc > 1 && strcmp(argv[1], "init") == 0) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
    }
    fputs("Status: 200\r\nContent-Type: application/json\r\n\r\n{\"Status\":\"Healthy\"}", stdout);
    return 0;
}
