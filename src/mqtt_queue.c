/* mqtt_queue.c - the bounded MQTT outbox (see mqtt_queue.h). A ring of entries: those in
 * flight or acknowledged out of order sit at the front, pending ones behind them; the head is
 * popped as soon as it is done. Owned by mqtt.c; never does I/O. */
#include "mqtt_queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum entry_state { E_PENDING, E_INFLIGHT, E_DONE };

struct entry {
	char *payload;
	size_t len;
	int64_t utc;
	int mid;
	unsigned meter;
	enum entry_state state;
};

struct mqtt_queue {
	struct entry *ring;
	size_t cap;   /* ring slots: max_entries plus room for entries done out of order */
	size_t head;  /* oldest slot */
	size_t n;     /* slots in use, done ones included */
	size_t live;  /* entries not done */
	size_t max_entries, max_bytes;
	struct mqtt_queue_stats st;
	mqtt_queue_drop_cb on_drop;
	void *drop_ud;
};

int mqtt_queue_new(size_t max_entries, size_t max_bytes, struct mqtt_queue **ret)
{
	if (!max_entries || !max_bytes)
		return -EINVAL;
	struct mqtt_queue *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->cap = max_entries + MQTT_QUEUE_SLACK;
	q->ring = calloc(q->cap, sizeof(*q->ring));
	if (!q->ring) {
		free(q);
		return -ENOMEM;
	}
	q->max_entries = max_entries;
	q->max_bytes = max_bytes;
	*ret = q;
	return 0;
}

struct mqtt_queue *mqtt_queue_free(struct mqtt_queue *q)
{
	if (!q)
		return NULL;
	for (size_t i = 0; i < q->n; i++)
		free(q->ring[(q->head + i) % q->cap].payload);
	free(q->ring);
	free(q);
	return NULL;
}

void mqtt_queue_on_drop(struct mqtt_queue *q, mqtt_queue_drop_cb cb, void *ud)
{
	q->on_drop = cb;
	q->drop_ud = ud;
}

static struct entry *at(const struct mqtt_queue *q, size_t i)
{
	return &q->ring[(q->head + i) % q->cap];
}

static void finish(struct mqtt_queue *q, struct entry *e)
{
	if (e->state == E_INFLIGHT)
		q->st.inflight--;
	free(e->payload);
	e->payload = NULL;
	q->st.bytes -= e->len;
	e->len = 0;
	e->state = E_DONE;
	q->live--;
	while (q->n && at(q, 0)->state == E_DONE) {
		q->head = (q->head + 1) % q->cap;
		q->n--;
	}
}

/* Drops the oldest pending entry; false when every entry is in flight. */
static bool drop_oldest(struct mqtt_queue *q)
{
	for (size_t i = 0; i < q->n; i++) {
		struct entry *e = at(q, i);
		if (e->state == E_PENDING) {
			if (q->on_drop)
				q->on_drop(q->drop_ud, e->meter, e->utc);
			finish(q, e);
			q->st.dropped++;
			return true;
		}
	}
	return false;
}

int mqtt_queue_push(struct mqtt_queue *q, unsigned meter, int64_t received_utc,
		    const char *payload, size_t len)
{
	if (len > q->max_bytes)
		return -E2BIG;
	char *copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, payload, len);
	while ((q->live >= q->max_entries || q->st.bytes + len > q->max_bytes) && drop_oldest(q))
		;
	if (q->n == q->cap) { /* only in-flight or done-out-of-order entries: no room at all */
		free(copy);
		q->st.dropped++;
		if (q->on_drop)
			q->on_drop(q->drop_ud, meter, received_utc);
		return 0;
	}
	*at(q, q->n) = (struct entry){copy, len, received_utc, 0, meter, E_PENDING};
	q->n++;
	q->live++;
	q->st.bytes += len;
	q->st.queued++;
	return 0;
}

static struct entry *first_pending(const struct mqtt_queue *q)
{
	for (size_t i = 0; i < q->n; i++)
		if (at(q, i)->state == E_PENDING)
			return at(q, i);
	return NULL;
}

bool mqtt_queue_peek(const struct mqtt_queue *q, unsigned *ret_meter, const char **ret_payload,
		     size_t *ret_len, int64_t *ret_utc, bool *ret_last)
{
	struct entry *e = first_pending(q);
	if (!e)
		return false;
	*ret_meter = e->meter;
	*ret_payload = e->payload;
	*ret_len = e->len;
	if (ret_utc)
		*ret_utc = e->utc;
	if (ret_last)
		*ret_last = e == at(q, q->n - 1);
	return true;
}

void mqtt_queue_sent(struct mqtt_queue *q, int mid)
{
	struct entry *e = first_pending(q);
	if (!e)
		return;
	e->state = E_INFLIGHT;
	e->mid = mid;
	q->st.inflight++;
}

bool mqtt_queue_ack(struct mqtt_queue *q, int mid, int64_t *ret_utc)
{
	/* entries in flight are all in front of the pending ones (they are sent oldest first and
	 * requeued as a whole): the search ends at the first pending entry, so an acknowledgement
	 * of another message (per-field, discovery) costs the in-flight window, not the queue */
	for (size_t i = 0; i < q->n; i++) {
		struct entry *e = at(q, i);
		if (e->state == E_PENDING)
			break;
		if (e->state == E_INFLIGHT && e->mid == mid) {
			if (ret_utc)
				*ret_utc = e->utc;
			finish(q, e);
			q->st.acked++;
			return true;
		}
	}
	return false;
}

void mqtt_queue_requeue(struct mqtt_queue *q)
{
	for (size_t i = 0; i < q->n; i++) {
		struct entry *e = at(q, i);
		if (e->state == E_INFLIGHT) {
			e->state = E_PENDING;
			e->mid = 0;
		}
	}
	q->st.inflight = 0;
}

void mqtt_queue_get_stats(const struct mqtt_queue *q, struct mqtt_queue_stats *ret)
{
	*ret = q->st;
	ret->entries = q->live;
}
