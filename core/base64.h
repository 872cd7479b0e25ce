/*
 * base64: the RFC 4648 alphabet as a table, shared by the lenient MIME
 * decoder (mime.c) and the strict AUTH one (auth.c).
 */
#ifndef LUASMTPD_BASE64_H
#define LUASMTPD_BASE64_H

/* A byte's value + 1; 0 for a byte outside the alphabet ('=' included). */
extern const signed char base64_digit[256];

#endif
