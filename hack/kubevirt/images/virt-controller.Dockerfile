# virt-controller: upstream's image (cmd/virt-controller/BUILD.bazel) is a distroless base, an /etc/passwd with
# nonroot-user 1001, /.version and /usr/bin/virt-controller, run as 1001. Same here on the Debian base
# of rootfs.sh. The Deployment runs it with runAsNonRoot, which needs a numeric USER.
ARG BASE
FROM ${BASE}
RUN echo 'nonroot-user:x:1001:1001::/home/nonroot-user:/bin/bash' >>/etc/passwd \
 && echo 'nonroot-user:x:1001:' >>/etc/group
COPY .version /.version
COPY virt-controller /usr/bin/virt-controller
RUN chmod 0755 /usr/bin/virt-controller && chmod 0644 /.version
USER 1001
ENTRYPOINT ["/usr/bin/virt-controller"]
