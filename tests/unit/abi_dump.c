/*
 * Prints the layout of every libgrist struct the Python binding mirrors
 * with ctypes (client/python/grist/_native.py), as lines
 *   STRUCT sizeof
 *   STRUCT.field offset
 * read by tests/unit/test_bindings.py, which compares them with the ctypes
 * structures. Compiled against the installed header, so a field added,
 * moved or retyped on one side only fails the test.
 */
#include <stddef.h>
#include <stdio.h>

#include "grist/client.h"

#define S(T) printf("%s %zu\n", #T, sizeof(struct T))
#define F(T, f) printf("%s.%s %zu\n", #T, #f, offsetof(struct T, f))

int main(void)
{
    S(grist_client_options);
    F(grist_client_options, backoff_initial_s);
    F(grist_client_options, backoff_max_s);
    F(grist_client_options, queue_capacity);
    F(grist_client_options, max_message_bytes);
    F(grist_client_options, keepalive_s);
    F(grist_client_options, token);
    F(grist_client_options, tls_ca_file);
    F(grist_client_options, tls_cert_file);
    F(grist_client_options, tls_key_file);
    F(grist_client_options, tls_server_name);
    S(grist_group_desc);
    F(grist_group_desc, name);
    F(grist_group_desc, num_elements);
    F(grist_group_desc, optimizer);
    F(grist_group_desc, lr);
    F(grist_group_desc, beta);
    F(grist_group_desc, sketch_sample);
    S(grist_attach_options);
    F(grist_attach_options, job);
    F(grist_attach_options, rank);
    F(grist_attach_options, world_size);
    F(grist_attach_options, ngroups);
    F(grist_attach_options, groups);
    F(grist_attach_options, sketch_dim);
    F(grist_attach_options, mode);
    F(grist_attach_options, noise_correction);
    F(grist_attach_options, lr_coupling);
    F(grist_attach_options, solve_every);
    F(grist_attach_options, min_steps);
    F(grist_attach_options, beta_min);
    F(grist_attach_options, beta_max);
    F(grist_attach_options, candidates);
    F(grist_attach_options, ncandidates);
    F(grist_attach_options, select_on);
    F(grist_attach_options, hysteresis_z);
    F(grist_attach_options, hysteresis_h);
    F(grist_attach_options, ema_gamma);
    F(grist_attach_options, j_ema);
    F(grist_attach_options, radius);
    F(grist_attach_options, rule);
    F(grist_attach_options, hysteresis_z_fast);
    F(grist_attach_options, sketch_kind);
    S(grist_tensor);
    F(grist_tensor, grad);
    F(grist_tensor, exp_avg_sq);
    F(grist_tensor, n);
    F(grist_tensor, offset);
    F(grist_tensor, group);
    F(grist_tensor, v_scale);
    F(grist_tensor, eps);
    S(grist_group_hyperparams);
    F(grist_group_hyperparams, momentum);
    F(grist_group_hyperparams, lr_scale);
    F(grist_group_hyperparams, lr);
    F(grist_group_hyperparams, confidence);
    S(grist_session_stats);
    F(grist_session_stats, submitted);
    F(grist_session_stats, sent);
    F(grist_session_stats, dropped);
    F(grist_session_stats, attaches);
    F(grist_session_stats, failures);
    F(grist_session_stats, received);
    F(grist_session_stats, queued);
    F(grist_session_stats, connected);
    F(grist_session_stats, last_status);
    return 0;
}
