# hedwig in a container: one static binary and nothing else (no shell, no
# libc, no CA bundle; mount /etc/ssl/certs for HTTPS and verified STARTTLS).
# Build the binaries first, then the image of each:
#
#   scripts/build-static x86_64
#   docker build --build-arg BIN=postoffice -t hedwig/postoffice .
#   docker build --build-arg BIN=mailman -t hedwig/mailman .
#
# or let docker-compose.yml do both. .dockerignore sends only dist/'s
# binaries to the daemon.
FROM scratch
ARG TARGET=x86_64-unknown-linux-musl
ARG BIN=postoffice
COPY dist/${TARGET}/${BIN} /hedwig
ENTRYPOINT ["/hedwig", "--config", "/etc/hedwig/hedwig.ron"]
