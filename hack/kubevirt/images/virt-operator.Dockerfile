# virt-operator: upstream's image (cmd/virt-operator/BUILD.bazel) is a distroless base, an
# /etc/passwd with nonroot-user 1001, /.version and /usr/bin/virt-operator (and csv-generator,
# which only OLM bundle builds use), run as 1001. Same here on the Debian base of rootfs.sh.
# The Deployment runs it with runAsNonRoot, which needs a numeric USER. The operator also
# runs this image as the install-strategy Job (--dump-install-strategy).
ARG BASE
FROM ${BASE}
RUN echo 'nonroot-user:x:1001:1001::/home/nonroot-user:/bin/bash' >>/etc/passwd \
 && echo 'nonroot-user:x:1001:' >>/etc/group
COPY .version /.version
COPY virt-operator /usr/bin/virt-operator
RUN chmod 0755 /usr/bin/virt-operator && chmod 0644 /.version
USER 1001
ENTRYPOINT ["/usr/bin/virt-operator"]
