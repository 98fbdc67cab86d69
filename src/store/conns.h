/*
 * conns.h - private to src/store: the per-thread connections every backend
 * keeps (store.h "Threads").
 *
 * Each calling thread's connection is found through a pthread key, and
 * every registered connection is also on a list, so that the backend's
 * close() can finish them all, those of threads still running included. A
 * thread that exits closes its own (the key's destructor). A backend's
 * connection struct embeds a struct store_conn_link and gets it back with
 * STORE_CONN_OF().
 *
 * Threads: every function may be called from any thread, except
 * store_conns_fini(), which must not run beside any other call (store.h:
 * no call may be running when a store is freed).
 */
#ifndef CHATD_STORE_CONNS_H
#define CHATD_STORE_CONNS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct store_conns;

struct store_conn_link {
    struct store_conn_link *prev, *next; /* on owner's list */
    struct store_conns *owner;
};

/* Closes and frees the connection of l. thread_exit: called by the thread
 * that owned it, as it exits (else by store_conns_fini, on any thread). */
typedef void (*store_conn_close_fn)(struct store_conn_link *l, bool thread_exit);

struct store_conns {
    pthread_key_t key;
    bool has_key;
    pthread_mutex_t lock; /* guards head and the links */
    struct store_conn_link *head;
    store_conn_close_fn close;
};

/* The struct of type `type` whose member `member` is the link l. */
#define STORE_CONN_OF(l, type, member) ((type *)(void *)((char *)(l)-offsetof(type, member)))

/* False if no thread key could be made; store_conns_fini() is still due. */
bool store_conns_init(struct store_conns *r, store_conn_close_fn close);
/* This thread's connection, or NULL. */
struct store_conn_link *store_conns_mine(struct store_conns *r);
/* Makes l this thread's connection. False (nothing kept) if the key fails. */
bool store_conns_add(struct store_conns *r, struct store_conn_link *l);
/* This thread's l is no longer found nor closed here: the caller closes it. */
void store_conns_forget(struct store_conns *r, struct store_conn_link *l);
/* Closes every connection still registered, then forgets them all. Returns
 * whether the calling thread had one. */
bool store_conns_fini(struct store_conns *r);

#endif
