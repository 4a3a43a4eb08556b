/* TLS plaintext capture: the maps and events shared by bpf/progs/tls_capture.bpf.c and
 * src/km/bpf/tls_capture.cc. Explicit, fixed-size fields; host order unless a field says
 * otherwise; both sides check the sizes. */
#ifndef KM_BPF_ABI_TLS_CAPTURE_H
#define KM_BPF_ABI_TLS_CAPTURE_H

#define KM_TLS_DATA_MAX 4096 /* plaintext bytes copied per call, at most (a prefix, never a modulo) */
#define KM_TLS_COMM_MAX 16

/* The probed functions. Bit 0 is the direction: 0 the process sends, 1 it receives. */
#define KM_TLS_FN_SSL_WRITE 0
#define KM_TLS_FN_SSL_READ 1
#define KM_TLS_FN_SSL_WRITE_EX 2
#define KM_TLS_FN_SSL_READ_EX 3
#define KM_TLS_FN_GNUTLS_SEND 4 /* gnutls_record_send, gnutls_record_send2 */
#define KM_TLS_FN_GNUTLS_RECV 5 /* gnutls_record_recv */
#define KM_TLS_FN_FREE 6        /* SSL_free, gnutls_deinit: the connection ended (a close record) */
#define KM_TLS_FN_MAX KM_TLS_FN_FREE

/* Value of the `sandboxes` map (key: the v2 cgroup id). */
#define KM_TLS_SANDBOX_PAYLOADS 1u /* copy plaintext from every call, not only message heads */
struct km_tls_sandbox {
  __u32 index; /* kmd's sandbox index, carried into events */
  __u32 flags; /* KM_TLS_SANDBOX_* */
};

/* Event flags. */
#define KM_TLS_F_DATA 1u     /* the record is a km_tls_event_data: data[] holds data_len bytes */
#define KM_TLS_F_HEAD 2u     /* first call on this connection since the direction changed: the
                              * plaintext can start a message (an HTTP request or response head) */
#define KM_TLS_F_PAYLOADS 4u /* the sandbox asked for payloads (KM_TLS_SANDBOX_PAYLOADS) */
#define KM_TLS_F_FAULT 8u    /* the plaintext could not be read (the page was not resident) */
#define KM_TLS_F_CLOSE 16u   /* fn KM_TLS_FN_FREE: the connection's SSL* (session) was freed; bytes
                              * is 0 and the socket fields are the connection's, if learnt. Only
                              * for connections that had a call in a watched process. */

/* One SSL_read/SSL_write(_ex) or gnutls_record_send/recv call that transferred bytes, emitted
 * when it returns; or the end of a connection (KM_TLS_F_CLOSE), emitted at SSL_free /
 * gnutls_deinit. */
struct km_tls_event {
  __u64 boot_ns;       /* bpf_ktime_get_boot_ns() at return */
  __u64 cgroup_id;     /* the v2 cgroup of the process */
  __u64 ssl;           /* the SSL* (gnutls_session_t) in the process: with pid, names the connection */
  __u64 bytes;         /* plaintext bytes the call transferred: the return value of SSL_read /
                        * SSL_write / gnutls_record_*, *readbytes / *written of the _ex
                        * variants, read at return */
  __u32 sandbox;       /* km_tls_sandbox.index */
  __u32 pid;           /* thread group id (host pid namespace) */
  __u32 tid;
  __s32 fd;            /* the socket the call used, -1 when not seen (memory BIOs) */
  __u16 family;        /* AF_INET, AF_INET6, another AF_*, or 0 when the socket is unknown */
  __u16 remote_port;
  __u16 local_port;
  __u8 fn;             /* KM_TLS_FN_* */
  __u8 flags;          /* KM_TLS_F_* */
  __u8 remote_addr[16];/* network order: IPv4 in the first 4 bytes, or IPv6 */
  char comm[KM_TLS_COMM_MAX];
  __u32 data_len;      /* bytes of data[] filled (<= KM_TLS_DATA_MAX); 0 without KM_TLS_F_DATA */
  __u32 reserved;
};

/* The same with a plaintext prefix: heads always, every call for sandboxes with payloads. */
struct km_tls_event_data {
  struct km_tls_event head;
  __u8 data[KM_TLS_DATA_MAX];
};

#define KM_TLS_EVENT_SIZE (4 * 8 + 4 * 4 + 3 * 2 + 2 + 16 + KM_TLS_COMM_MAX + 2 * 4)
#define KM_TLS_EVENT_DATA_SIZE (KM_TLS_EVENT_SIZE + KM_TLS_DATA_MAX)

#endif
