# llmproxy - an OpenAI-compatible LLM API proxy as FastCGI programs
# `make run` serves on 127.0.0.1:$LLMPROXY_PORT; `make test` runs every test.

CC      ?= cc
STD     := -std=c17
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wwrite-strings -Wformat=2 -Wvla
OPT     := -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong
SAN     := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
DEPFLAGS = -MMD -MP
LIBS    := -lcurl -lcjson -lsqlite3 -lhiredis -lpthread -lm
ADMIN_LIBS := -lcjson -lsqlite3 -lpthread -lm

# the pure modules (no sockets, no libcurl): unit tests link them all
CORE    := buf log config route state request sse http snapshot auth store health fcgi policy sha256 \
           utctime keys meter limit metrics \
           endpoint multipart affinity redis_url
PROXY   := buf log config route state request sse http snapshot store health fcgi policy endpoint metrics \
           loop conn reply answer upstream attempt proxy proxy_main auth utctime sha256 keys usage meter limit client \
           affinity \
           multipart redis redis_url shared
ADMIN   := buf log config state auth store fcgi loop conn reply admin admin_main admin_page \
           utctime sha256 keys admin_keys admin_usage usage health policy metrics admin_metrics \
           redis_url
UNITS   := buf config route state request sse http snapshot auth store health fcgi policy endpoint sha256 \
           log utctime keys meter limit metrics usage multipart affinity redis_url loop

REL_DIR := build/release
SAN_DIR := build/asan
VG_DIR  := build/valgrind

PROXY_REL := cgi-bin/llmproxy.fcgi
PROXY_SAN := $(SAN_DIR)/llmproxy.fcgi
ADMIN_REL := cgi-bin/llmproxy-admin.fcgi
ADMIN_SAN := $(SAN_DIR)/llmproxy-admin.fcgi
UNIT_BINS := $(UNITS:%=$(SAN_DIR)/test_%)
# the same unit tests without sanitizers, to run under valgrind
VG_BINS   := $(UNITS:%=$(VG_DIR)/test_%)

export LLMPROXY_PORT ?= 1852
export LLMPROXY_STATE_DIR ?= $(CURDIR)/var

.PHONY: all deps run test unit e2e bench fuzz clean format check-format install uninstall \
        dist dist-test

all: $(PROXY_REL) $(ADMIN_REL)

deps:
	@scripts/deps.sh build

$(REL_DIR)/%.o: fcgi/%.c | $(REL_DIR)
	$(CC) $(STD) $(WARN) $(OPT) $(DEPFLAGS) $(CFLAGS) -c $< -o $@

# the admin page, carried inside the admin program (so a web server need not
# be able to read htdocs/)
GEN_DIR := build/gen
$(GEN_DIR)/admin_page.c: htdocs/admin.html scripts/embed.sh
	@mkdir -p $(GEN_DIR)
	@scripts/embed.sh admin_page $< > $@.tmp && mv $@.tmp $@

$(REL_DIR)/admin_page.o: $(GEN_DIR)/admin_page.c | $(REL_DIR)
	$(CC) $(STD) $(WARN) $(OPT) -Ifcgi $(CFLAGS) -c $< -o $@

$(SAN_DIR)/admin_page.o: $(GEN_DIR)/admin_page.c | $(SAN_DIR)
	$(CC) $(STD) $(WARN) $(SAN) -Ifcgi $(CFLAGS) -c $< -o $@

$(SAN_DIR)/%.o: fcgi/%.c | $(SAN_DIR)
	$(CC) $(STD) $(WARN) $(SAN) $(DEPFLAGS) $(CFLAGS) -c $< -o $@

$(VG_DIR)/%.o: fcgi/%.c | $(VG_DIR)
	$(CC) $(STD) $(WARN) -O1 -g $(DEPFLAGS) $(CFLAGS) -c $< -o $@

$(VG_DIR)/test_%.o: tests/unit/test_%.c | $(VG_DIR)
	$(CC) $(STD) $(WARN) -O1 -g $(DEPFLAGS) -Ifcgi -Itests/unit $(CFLAGS) -c $< -o $@

$(VG_DIR)/test_%: $(VG_DIR)/test_%.o $(CORE:%=$(VG_DIR)/%.o)
	$(CC) -g $< $(filter-out $(VG_DIR)/$*.o,$(CORE:%=$(VG_DIR)/%.o)) -o $@ $(ADMIN_LIBS)

$(SAN_DIR)/test_%.o: tests/unit/test_%.c | $(SAN_DIR)
	$(CC) $(STD) $(WARN) $(SAN) $(DEPFLAGS) -Ifcgi -Itests/unit $(CFLAGS) -c $< -o $@

$(PROXY_REL): $(PROXY:%=$(REL_DIR)/%.o)
	@mkdir -p $(@D)
	$(CC) $(OPT) $^ -o $@ $(LIBS)

$(PROXY_SAN): $(PROXY:%=$(SAN_DIR)/%.o)
	$(CC) $(SAN) $^ -o $@ $(LIBS)

$(ADMIN_REL): $(ADMIN:%=$(REL_DIR)/%.o)
	@mkdir -p $(@D)
	$(CC) $(OPT) $^ -o $@ $(ADMIN_LIBS)

$(ADMIN_SAN): $(ADMIN:%=$(SAN_DIR)/%.o)
	$(CC) $(SAN) $^ -o $@ $(ADMIN_LIBS)

# each unit test includes the module it tests, and links the other core modules
$(SAN_DIR)/test_%: $(SAN_DIR)/test_%.o $(CORE:%=$(SAN_DIR)/%.o)
	$(CC) $(SAN) $< $(filter-out $(SAN_DIR)/$*.o,$(CORE:%=$(SAN_DIR)/%.o)) -o $@ $(ADMIN_LIBS)

$(REL_DIR) $(SAN_DIR) $(VG_DIR):
	@mkdir -p $@

run: deps $(PROXY_REL) $(ADMIN_REL)
	@scripts/run.sh

test: 
	@scripts/deps.sh test
	@$(MAKE) -s --no-print-directory $(PROXY_REL) $(ADMIN_REL) $(PROXY_SAN) $(ADMIN_SAN) $(UNIT_BINS) $(VG_BINS) \
		$(FUZZ_BINS)
	@python3 tests/run.py

unit: $(UNIT_BINS)
	@python3 tests/run.py --unit-only

bench: deps $(PROXY_REL) $(ADMIN_REL) build/bench/fastupstream build/bench/streamload \
       build/bench/snapshot_cost build/bench/metrics_cost build/bench/cgi_floor build/bench/cgi_none \
       build/bench/openload build/bench/fcgi_floor
	@scripts/deps.sh bench
	@python3 scripts/bench.py

build/bench/fastupstream: tests/bench/fastupstream.c
	@mkdir -p build/bench
	$(CC) $(STD) $(WARN) -O2 -g $< -o $@ -lpthread

build/bench/streamload: tests/bench/streamload.c
	@mkdir -p build/bench
	$(CC) $(STD) $(WARN) -O2 -g $< -o $@

# what recording a request's metrics costs, optimised as in the release build
build/bench/metrics_cost: tests/bench/metrics_cost.c fcgi/metrics.c fcgi/state.c fcgi/policy.c \
		fcgi/buf.c fcgi/log.c
	@mkdir -p build/bench
	$(CC) $(STD) $(WARN) -O2 -Ifcgi $^ -o $@ -lpthread

# the floor under plain CGI: a process start, and one that links libcurl
build/bench/cgi_floor: tests/bench/cgi_floor.c
	@mkdir -p build/bench
	$(CC) $(STD) $(WARN) -O2 $< -o $@ -lcurl

build/bench/openload: tests/bench/openload.c
	@mkdir -p build/bench
	$(CC) $(STD) $(WARN) -O2 $< -o $@

# the least a FastCGI gateway can do, spawned by lighttpd in llmproxy's place
build/bench/fcgi_floor: tests/bench/fcgi_floor.c
	@mkdir -p build/bench
	$(CC) $(STD) $(WARN) -O2 $< -o $@

build/bench/cgi_none: tests/bench/cgi_none.c
	@mkdir -p build/bench
	$(CC) $(STD) $(WARN) -O2 $< -o $@

# the hot-reload check's cost per request, optimised as in the release build
build/bench/snapshot_cost: tests/unit/test_snapshot.c $(PROXY:%=fcgi/%.c)
	@mkdir -p build/bench
	$(CC) $(STD) $(WARN) -O2 -Ifcgi -Itests/unit tests/unit/test_snapshot.c fcgi/buf.c fcgi/log.c \
		fcgi/config.c fcgi/route.c fcgi/state.c fcgi/keys.c fcgi/sha256.c fcgi/utctime.c fcgi/store.c -o $@ \
		-lcjson -lpthread -lm

# libFuzzer harnesses (clang): tests/fuzz/fuzz_<name>.c over the pure modules
FUZZERS   := request config retry_after sse fcgi multipart
FUZZ_BINS := $(FUZZERS:%=build/fuzz/fuzz_%)
FUZZ_CC   ?= clang
FUZZ_SECONDS ?= 600
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Ifcgi
FUZZ_SRCS := fcgi/buf.c fcgi/log.c fcgi/config.c fcgi/route.c fcgi/request.c fcgi/sse.c fcgi/http.c \
             fcgi/fcgi.c fcgi/utctime.c fcgi/multipart.c

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_SRCS)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $< $(FUZZ_SRCS) -o $@ -lcjson

# `make fuzz` runs each harness FUZZ_SECONDS (600) on a copy of its corpus
fuzz: $(FUZZ_BINS)
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZERS)

# make install PREFIX=/usr/local DESTDIR=: programs in $(PREFIX)/lib/llmproxy,
# the page and config snippets in $(PREFIX)/share/llmproxy, systemd units in
# $(PREFIX)/lib/systemd/system (paths inside them follow PREFIX).
PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR   = $(DESTDIR)$(PREFIX)/lib/llmproxy
SHAREDIR = $(DESTDIR)$(PREFIX)/share/llmproxy
UNITDIR  = $(DESTDIR)$(PREFIX)/lib/systemd/system
DOCDIR   = $(DESTDIR)$(PREFIX)/share/doc/llmproxy
SNIPPETS = lighttpd/15-llmproxy.conf apache/llmproxy-proxy-fcgi.conf apache/llmproxy-fcgid.conf \
           apache/htaccess dynamic_routing.default.json
UNITS_SD = llmproxy.service llmproxy-admin.service
FIXPATHS = sed -e 's|/usr/local/|$(PREFIX)/|g'

install: $(PROXY_REL) $(ADMIN_REL)
	install -d $(LIBDIR) $(SHAREDIR)/htdocs $(SHAREDIR)/etc/lighttpd $(SHAREDIR)/etc/apache \
		$(UNITDIR) $(DOCDIR)
	install -m 0755 $(PROXY_REL) $(ADMIN_REL) $(LIBDIR)/
	install -m 0644 htdocs/admin.html htdocs/index.html $(SHAREDIR)/htdocs/
	for f in $(SNIPPETS); do $(FIXPATHS) etc/$$f > $(SHAREDIR)/etc/$$f; chmod 0644 $(SHAREDIR)/etc/$$f; done
	for f in $(UNITS_SD); do $(FIXPATHS) etc/systemd/$$f > $(UNITDIR)/$$f; chmod 0644 $(UNITDIR)/$$f; done
	install -m 0644 README.md $(DOCDIR)/

uninstall:
	rm -f $(LIBDIR)/llmproxy.fcgi $(LIBDIR)/llmproxy-admin.fcgi
	rm -f $(SHAREDIR)/htdocs/admin.html $(SHAREDIR)/htdocs/index.html
	for f in $(SNIPPETS); do rm -f $(SHAREDIR)/etc/$$f; done
	for f in $(UNITS_SD); do rm -f $(UNITDIR)/$$f; done
	rm -f $(DOCDIR)/README.md
	-rmdir $(LIBDIR) $(SHAREDIR)/htdocs $(SHAREDIR)/etc/lighttpd $(SHAREDIR)/etc/apache \
		$(SHAREDIR)/etc $(SHAREDIR) $(DOCDIR) 2>/dev/null

format:
	clang-format -i fcgi/*.c fcgi/*.h tests/unit/*.c tests/unit/*.h tests/bench/*.c tests/fuzz/*.c

check-format:
	clang-format --dry-run -Werror fcgi/*.c fcgi/*.h tests/unit/*.c tests/unit/*.h tests/bench/*.c

clean:
	rm -rf build $(PROXY_REL) $(ADMIN_REL)

-include $(wildcard $(REL_DIR)/*.d $(SAN_DIR)/*.d $(VG_DIR)/*.d)

# `make dist`: the shared-hosting tarball, built inside a Debian 11 chroot
# (glibc 2.31: it runs on that and anything newer) with cJSON compiled in and
# libcurl linked dynamically; `make dist-test` unpacks it into fresh Debian 11
# and 13 chroots that have only apache2 and libcurl4 and checks it there.
# Both need root (debootstrap, chroot) and a Debian mirror.
dist: $(GEN_DIR)/admin_page.c
	@scripts/dist.sh

dist-test:
	@scripts/dist_test.sh

print-%:
	@echo $($*)
