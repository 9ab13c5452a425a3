// relay: a TCP relay on io_uring, one thread, for measuring what batching
// the system calls could give the TCP proxy (see README.md beside it). Not
// part of the product: no timeouts, no limits, loopback only.
//
//   relay LISTEN_PORT BACKEND_PORT   (both on 127.0.0.1)
//
// Each accepted connection gets a connection to the backend; both sockets
// get a multishot recv into buffers from one provided-buffer ring, and every
// received chunk is sent on the other socket from the buffer it arrived in
// (the buffer goes back to the ring when the send completes). One
// io_uring_enter per loop submits the sends and waits for the next
// completions, so a loop that finds several completions serves them with
// one system call. The ring is set up with SINGLE_ISSUER|DEFER_TASKRUN (the
// kernel runs the receives when the loop enters it), or with COOP_TASKRUN
// (RELAY_COOP=1), or with neither (RELAY_IPI=1: the kernel interrupts the
// thread to run them as soon as bytes arrive).
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

enum { NBUF = 4096, BUFSZ = 4096, MAXFD = 65536 }; // fds and lengths fit 16 bits, offsets 12
enum { OP_ACCEPT = 1, OP_RECV, OP_SEND };

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static int peer[MAXFD];

// user_data: op (4 bits) | buffer id (16) | offset in the buffer (12) |
// length (16) | fd (16)
static uint64_t pack(int op, int bid, int off, int len, int fd) {
	return (uint64_t)op << 60 | (uint64_t)bid << 44 | (uint64_t)off << 32 | (uint64_t)len << 16 | (uint64_t)fd;
}

static struct io_uring_sqe *sqe(void) {
	struct io_uring_sqe *s = io_uring_get_sqe(&ring);
	if (!s) {
		io_uring_submit(&ring);
		s = io_uring_get_sqe(&ring);
	}
	return s;
}

static void arm_recv(int fd) {
	struct io_uring_sqe *s = sqe();
	io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
	s->flags |= IOSQE_BUFFER_SELECT;
	s->buf_group = 0;
	io_uring_sqe_set_data64(s, pack(OP_RECV, 0, 0, 0, fd));
}

static void send_from(int fd, int bid, int off, int len) {
	struct io_uring_sqe *s = sqe();
	io_uring_prep_send(s, fd, bufs + (size_t)bid * BUFSZ + off, len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(s, pack(OP_SEND, bid, off, len, fd));
}

static void give_back(int bid) {
	io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, bid, io_uring_buf_ring_mask(NBUF), 0);
	io_uring_buf_ring_advance(br, 1);
}

static void end(int fd) {
	int p = peer[fd];
	if (p > 0) {
		shutdown(p, SHUT_WR); // the other side sees the end; it closes when its read ends
		peer[p] = -peer[p];
	}
	if (p <= 0) {
		close(fd);
		if (p < 0) close(-p);
	}
	peer[fd] = 0;
}

static int dial(int port) {
	int one = 1, c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) {
		perror("relay: connect to the backend");
		exit(1);
	}
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return c;
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: relay LISTEN_PORT BACKEND_PORT\n");
		return 2;
	}
	int lport = atoi(argv[1]), bport = atoi(argv[2]), one = 1;
	struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
	if (getenv("RELAY_COOP")) p.flags = IORING_SETUP_COOP_TASKRUN;
	if (getenv("RELAY_IPI")) p.flags = 0; // task work signalled to the thread at once
	int err = io_uring_queue_init_params(1024, &ring, &p);
	if (err) {
		fprintf(stderr, "relay: io_uring_queue_init: %s\n", strerror(-err));
		return 1;
	}
	br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	bufs = malloc((size_t)NBUF * BUFSZ);
	struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = 0};
	if (br == MAP_FAILED || !bufs || (err = io_uring_register_buf_ring(&ring, &reg, 0))) {
		fprintf(stderr, "relay: provided buffers: %s\n", strerror(-err));
		return 1;
	}
	io_uring_buf_ring_init(br);
	for (int i = 0; i < NBUF; i++)
		io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, i, io_uring_buf_ring_mask(NBUF), i);
	io_uring_buf_ring_advance(br, NBUF);

	int l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lport), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1024) != 0) {
		perror("relay: listen");
		return 1;
	}
	struct io_uring_sqe *s = sqe();
	io_uring_prep_multishot_accept(s, l, NULL, NULL, 0);
	io_uring_sqe_set_data64(s, pack(OP_ACCEPT, 0, 0, 0, l));

	for (;;) {
		if ((err = io_uring_submit_and_wait(&ring, 1)) < 0 && err != -EINTR) {
			fprintf(stderr, "relay: io_uring_enter: %s\n", strerror(-err));
			return 1;
		}
		struct io_uring_cqe *c;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&ring, head, c) {
			n++;
			uint64_t u = c->user_data;
			int op = u >> 60, bid = (u >> 44) & 0xffff, off = (u >> 32) & 0xfff, len = (u >> 16) & 0xffff, fd = u & 0xffff;
			if (op == OP_ACCEPT) {
				if (c->res < 0 || c->res >= MAXFD) continue;
				int cfd = c->res, b = dial(bport);
				setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				peer[cfd] = b, peer[b] = cfd;
				arm_recv(cfd), arm_recv(b);
			} else if (op == OP_RECV) {
				int to = abs(peer[fd]); // negative: the other socket's reading has ended, its writing not
				if (c->res > 0) {
					int bid = c->flags >> IORING_CQE_BUFFER_SHIFT;
					if (to > 0) send_from(to, bid, 0, c->res);
					else give_back(bid);
					if (!(c->flags & IORING_CQE_F_MORE)) arm_recv(fd);
				} else if (c->res == -ENOBUFS) {
					arm_recv(fd);
				} else if (!(c->flags & IORING_CQE_F_MORE)) {
					end(fd);
				}
			} else if (op == OP_SEND) {
				if (c->res > 0 && c->res < len) { // short send: the rest from where it stopped
					send_from(fd, bid, off + c->res, len - c->res);
					continue;
				}
				give_back(bid); // sent, or the connection failed: its ends close through the recvs
			}
		}
		io_uring_cq_advance(&ring, n);
	}
}
