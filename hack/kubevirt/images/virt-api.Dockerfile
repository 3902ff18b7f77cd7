# virt-api: upstream's image (cmd/virt-api/BUILD.bazel) is a distroless base, an /etc/passwd with
# nonroot-user 1001, /.version and /usr/bin/virt-api, run as 1001. Same here on the Debian base
# of rootfs.sh. The Deployment runs it with runAsNonRoot, which needs a numeric USER.
ARG BASE
FROM ${BASE}
RUN echo 'nonroot-user:x:1001:1001::/home/nonroot-user:/bin/bash' >>/etc/passwd \
 && echo 'nonroot-user:x:1001:' >>/etc/group
COPY .version /.version
COPY virt-api /usr/bin/virt-api
RUN chmod 0755 /usr/bin/virt-api && chmod 0644 /.version
USER 1001
ENTRYPOINT ["/usr/bin/virt-api"]
