/* coordctl metrics: the broker's metrics in the Prometheus text format
 * (see metrics_cmd.c). */
#ifndef COORD_METRICS_CMD_H
#define COORD_METRICS_CMD_H

/* `coordctl metrics`: argv[0] is the command's name, dir coordctl's --dir
 * (or NULL).  Returns an exit status: 0 ok, 1 failed, 64 usage, 69 no
 * broker. */
int cmd_metrics(int argc, char **argv, const char *dir);

#endif
