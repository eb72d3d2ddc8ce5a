#!/bin/sh
# embed.sh NAME FILE: prints a C file that defines NAME[] (FILE's bytes and a
# NUL) and NAME_len, so a program carries the file inside (the admin page).
set -eu
name=$1
file=$2
echo "/* generated from $file by scripts/embed.sh: do not edit */"
echo '#include "common.h"'
echo '#include "admin.h"'
echo "const char $name[] = {"
od -An -v -tx1 "$file" | awk '{ line = ""; for (i = 1; i <= NF; i++) line = line "0x" $i ","; print line }'
echo "0};"
echo "const size_t ${name}_len = sizeof($name) - 1;"
