/* cgi_none.c - a CGI program that links nothing: the cost of a process start alone */
/* SPDX-License-Identifier: MIT */
#include <stdio.h>

int main(void)
{
    fputs("Status: 200\r\nContent-Type: application/json\r\n\r\n{\"Status\":\"Healthy\"}", stdout);
    return 0;
}
