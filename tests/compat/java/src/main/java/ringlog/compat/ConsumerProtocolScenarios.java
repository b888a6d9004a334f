package ringlog.compat;

import static ringlog.compat.Ctx.map;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.TopicPartition;

/**
 * The consumer group protocol of KIP-848 (group.protocol=consumer): the broker assigns, members
 * reconcile. Members consume and commit after every poll, so across rebalances every record is
 * consumed exactly once, and a later member of the group resumes at the committed offsets.
 */
final class ConsumerProtocolScenarios {
    private ConsumerProtocolScenarios() {}

    /** A consumer-protocol member polling on its own thread, recording every (partition, offset). */
    static final class Member implements AutoCloseable {
        final String name;
        final List<Object> consumed = Collections.synchronizedList(new ArrayList<>());
        volatile Set<TopicPartition> assignment = Set.of();
        volatile String memberId = "";
        volatile Throwable error;
        private volatile boolean stop;
        private final Thread thread;

        Member(Ctx ctx, String name, String topic, String group, Object... config) {
            this.name = name;
            Properties props = ctx.consumerProps(ConsumerConfig.GROUP_ID_CONFIG, group,
                    ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer", ConsumerConfig.CLIENT_ID_CONFIG, ctx.name(name));
            // the broker decides these with the consumer protocol; the client refuses them
            props.remove(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG);
            props.remove(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG);
            for (int i = 0; i + 1 < config.length; i += 2) props.put(config[i], config[i + 1]);
            KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props);
            thread = new Thread(() -> {
                try {
                    consumer.subscribe(List.of(topic));
                    while (!stop) {
                        int n = 0;
                        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                            consumed.add(List.of(r.partition(), r.offset()));
                            n++;
                        }
                        if (n > 0) consumer.commitSync(Duration.ofSeconds(15));
                        assignment = Set.copyOf(consumer.assignment());
                        memberId = consumer.groupMetadata().memberId();
                    }
                } catch (Throwable t) {
                    error = t;
                } finally {
                    consumer.close(CloseOptions.timeout(Duration.ofSeconds(10)));
                }
            }, "cp-member-" + name);
            thread.setDaemon(true);
            thread.start();
        }

        Map<String, Object> report() {
            synchronized (consumed) {
                return map("name", name, "member_id", memberId, "assignment", Ctx.partitions(assignment),
                        "consumed", new ArrayList<>(consumed), "error", error == null ? null : Main.stackTrace(error));
            }
        }

        @Override
        public void close() throws InterruptedException {
            stop = true;
            thread.join(30_000);
        }
    }

    /** Every member owns something and together they own each partition once. */
    static boolean covers(int partitions, Member... members) {
        List<TopicPartition> owned = Arrays.stream(members).flatMap(m -> m.assignment.stream()).toList();
        return Arrays.stream(members).noneMatch(m -> m.assignment.isEmpty()) && owned.size() == partitions
                && new HashSet<>(owned).size() == partitions;
    }

    static int consumed(Member... members) {
        int n = 0;
        for (Member m : members) n += m.consumed.size();
        return n;
    }

    static Map<String, Object> describe(Admin admin, String group) throws Exception {
        ConsumerGroupDescription g = admin.describeConsumerGroups(List.of(group)).all().get(20, TimeUnit.SECONDS).get(group);
        List<Object> members = new ArrayList<>();
        for (MemberDescription m : g.members()) {
            members.add(map("member_id", m.consumerId(), "epoch", m.memberEpoch().orElse(null),
                    "assignment", Ctx.partitions(m.assignment().topicPartitions()),
                    "target", m.targetAssignment().map(t -> Ctx.partitions(t.topicPartitions())).orElse(null)));
        }
        return map("state", String.valueOf(g.groupState()), "type", String.valueOf(g.type()),
                "assignor", g.partitionAssignor(), "group_epoch", g.groupEpoch().orElse(null),
                "assignment_epoch", g.targetAssignmentEpoch().orElse(null), "members", members);
    }

    /**
     * Three members share six partitions; one leaves; more records; all leave; a new member
     * resumes at the committed offsets.
     */
    static Map<String, Object> rebalance(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        String group = ctx.name("g");
        int partitions = 6;
        ctx.createTopic(topic, partitions);
        List<Object> produced = new ArrayList<>();
        Map<String, Object> result = map("topic", topic, "group", group, "partitions", partitions);
        try (KafkaProducer<byte[], byte[]> p = ctx.producer(); Admin admin = ctx.admin()) {
            produced.addAll(ProducerScenarios.sendAll(p, topic, null, 0, 60));
            Member a = new Member(ctx, "a", topic, group);
            Member b = new Member(ctx, "b", topic, group);
            Member c = new Member(ctx, "c", topic, group);
            List<Object> steps = new ArrayList<>();
            try {
                steps.add(map("step", "three members", "reached", Ctx.waitFor(() -> covers(partitions, a, b, c), 60_000)));
                steps.add(map("step", "first 60", "reached", Ctx.waitFor(() -> consumed(a, b, c) >= 60, 30_000)));
                result.put("described_three", describe(admin, group));
                c.close();
                steps.add(map("step", "c left", "reached", Ctx.waitFor(() -> covers(partitions, a, b), 30_000)));
                produced.addAll(ProducerScenarios.sendAll(p, topic, null, 60, 60));
                steps.add(map("step", "next 60", "reached", Ctx.waitFor(() -> consumed(a, b, c) >= 120, 30_000)));
                result.put("described_two", describe(admin, group));
                List<Object> listed = new ArrayList<>();
                for (GroupListing g : admin.listGroups().all().get(20, TimeUnit.SECONDS)) {
                    if (g.groupId().equals(group)) {
                        listed.add(map("type", String.valueOf(g.type().orElse(null)), "protocol", g.protocol(),
                                "state", String.valueOf(g.groupState().orElse(null))));
                    }
                }
                result.put("listed", listed);
            } finally {
                a.close();
                b.close();
                c.close();
            }
            result.put("members", List.of(a.report(), b.report(), c.report()));
            Map<String, Object> committed = new java.util.TreeMap<>();
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(20, TimeUnit.SECONDS)
                    .forEach((tp, om) -> committed.put(tp.toString(), om.offset()));
            result.put("committed", committed);
            // everyone left: a newcomer starts at the committed offsets, reading only the new records
            produced.addAll(ProducerScenarios.sendAll(p, topic, null, 120, 30));
            try (Member d = new Member(ctx, "d", topic, group)) {
                steps.add(map("step", "d resumes", "reached", Ctx.waitFor(() -> consumed(d) >= 30, 30_000)));
                d.close();
                result.put("resumed", d.report());
            }
            result.put("steps", steps);
            result.put("produced", produced);
        }
        return result;
    }

    /** group.remote.assignor=range: two members get consecutive ranges, named in the description. */
    static Map<String, Object> range(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        String group = ctx.name("g");
        ctx.createTopic(topic, 4);
        Map<String, Object> result = map("topic", topic, "group", group);
        try (Admin admin = ctx.admin();
             Member a = new Member(ctx, "a", topic, group, ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, "range");
             Member b = new Member(ctx, "b", topic, group, ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, "range")) {
            result.put("reached", Ctx.waitFor(() -> covers(4, a, b), 60_000));
            result.put("a", a.report());
            result.put("b", b.report());
            result.put("described", describe(admin, group));
        }
        return result;
    }
}
