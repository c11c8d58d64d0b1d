#!/usr/bin/env bash
. "${PB_SRCDIR:-.}/tests/lib.sh"
finish
