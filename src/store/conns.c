/*
 * conns.c - the per-thread connection registry of conns.h.
 */
#include "store/conns.h"

static void unlink_conn(struct store_conns *r, struct store_conn_link *l)
{
    pthread_mutex_lock(&r->lock);
    if (l->prev)
        l->prev->next = l->next;
    else
        r->head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
    pthread_mutex_unlock(&r->lock);
}

/* The key's destructor: the thread is exiting and takes its connection. */
static void thread_exit(void *p)
{
    struct store_conn_link *l = p;
    struct store_conns *r = l->owner;
    unlink_conn(r, l);
    r->close(l, true);
}

bool store_conns_init(struct store_conns *r, store_conn_close_fn close)
{
    r->head = NULL;
    r->close = close;
    pthread_mutex_init(&r->lock, NULL);
    r->has_key = pthread_key_create(&r->key, thread_exit) == 0;
    return r->has_key;
}

struct store_conn_link *store_conns_mine(struct store_conns *r)
{
    return r->has_key ? pthread_getspecific(r->key) : NULL;
}

bool store_conns_add(struct store_conns *r, struct store_conn_link *l)
{
    if (!r->has_key || pthread_setspecific(r->key, l) != 0)
        return false;
    l->owner = r;
    l->prev = NULL;
    pthread_mutex_lock(&r->lock);
    l->next = r->head;
    if (r->head)
        r->head->prev = l;
    r->head = l;
    pthread_mutex_unlock(&r->lock);
    return true;
}

void store_conns_forget(struct store_conns *r, struct store_conn_link *l)
{
    pthread_setspecific(r->key, NULL);
    unlink_conn(r, l);
}

bool store_conns_fini(struct store_conns *r)
{
    bool mine = false;
    /* After pthread_key_delete no thread runs the destructor any more, so
     * the connections of threads still alive are ours to close. */
    if (r->has_key) {
        mine = pthread_getspecific(r->key) != NULL;
        pthread_setspecific(r->key, NULL);
        pthread_key_delete(r->key);
        r->has_key = false;
    }
    pthread_mutex_lock(&r->lock);
    struct store_conn_link *l = r->head;
    r->head = NULL;
    pthread_mutex_unlock(&r->lock);
    while (l) {
        struct store_conn_link *next = l->next;
        r->close(l, false);
        l = next;
    }
    pthread_mutex_destroy(&r->lock);
    return mine;
}
