/* health.h - how the store and the MQTT client are doing, in the forms operators read:
 * sections of GET /api/v1/status (http_status_cb), Prometheus families (http_metrics_cb) and
 * a short text for systemd's STATUS= line. Built on the modules' public stats only; main
 * connects them to the HTTP server, so that no sink knows another. */
#ifndef P1D_HEALTH_H
#define P1D_HEALTH_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

struct store;
struct mqtt;

/* ud: the store. */
void health_store_status(void *ud, json_t *section);
void health_store_metrics(void *ud, FILE *out);
/* ud: the MQTT client. */
void health_mqtt_status(void *ud, json_t *section);
void health_mqtt_metrics(void *ud, FILE *out);
/* Disk and memory of the whole process (/proc/self), as Prometheus families. */
void health_process_metrics(void *ud, FILE *out);

/* Appends "; store ok" or "; store failing (120 readings waiting)", and "; mqtt connected"
 * or "; mqtt away (35 waiting)" to the string in buf; either module may be NULL. Returns the
 * new length. */
size_t health_format_status(const struct store *s, const struct mqtt *q, char *buf, size_t size);

#endif
