/* API-key authentication shared by the routes that take a project's key. */
#ifndef PB_CORE_AUTH_H
#define PB_CORE_AUTH_H
#include "problem.h"
#include "server.h"

/* The caller's key from x-api-key, else Authorization: Bearer; NULL. */
const char *pb_auth_key_of(struct pb_request *r);
/* Authenticates into r->project_id; 0, or a 401 reply with *rc set. */
int pb_auth_key(struct pb_request *r, int *rc);
/* Authenticates and checks that the {project} parameter is the key's
 * project (another project answers 404); 0, or a reply with *rc set. */
int pb_auth_project(struct pb_request *r, int *rc);
/* Replies with a problem and frees it. */
int pb_reply_from_problem(struct pb_request *r, struct pb_problem *p);
#endif
