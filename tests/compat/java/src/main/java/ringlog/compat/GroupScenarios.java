package ringlog.compat;

import static ringlog.compat.Ctx.map;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.TopicPartition;

/** Consumer groups with several members: rebalancing with two assignors, static membership. */
final class GroupScenarios {
    private GroupScenarios() {}

    /**
     * One group member polling on its own thread (a KafkaConsumer is single-threaded), recording
     * every rebalance callback in order and how many records it received.
     */
    static final class Member implements AutoCloseable {
        final String name;
        final List<Object> events = Collections.synchronizedList(new ArrayList<>());
        volatile Set<TopicPartition> assignment = Set.of();
        volatile int generation = -1;
        volatile String memberId = "";
        volatile int records;
        volatile Throwable error;
        private volatile boolean stop;
        private volatile CloseOptions closeOptions = CloseOptions.timeout(Duration.ofSeconds(10));
        private final Thread thread;

        Member(Ctx ctx, String name, String topic, Object... config) {
            this.name = name;
            KafkaConsumer<byte[], byte[]> consumer = ctx.consumer(config);
            ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                    events.add(map("event", "revoked", "partitions", Ctx.partitions(parts)));
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                    events.add(map("event", "assigned", "partitions", Ctx.partitions(parts)));
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> parts) {
                    events.add(map("event", "lost", "partitions", Ctx.partitions(parts)));
                }
            };
            thread = new Thread(() -> {
                try {
                    consumer.subscribe(List.of(topic), listener);
                    while (!stop) {
                        records += consumer.poll(Duration.ofMillis(100)).count();
                        assignment = Set.copyOf(consumer.assignment());
                        generation = consumer.groupMetadata().generationId();
                        memberId = consumer.groupMetadata().memberId();
                    }
                } catch (Throwable t) {
                    error = t;
                } finally {
                    consumer.close(closeOptions);
                }
            }, "member-" + name);
            thread.setDaemon(true);
            thread.start();
        }

        Map<String, Object> report() {
            synchronized (events) {
                return map("name", name, "assignment", Ctx.partitions(assignment), "generation", generation,
                        "member_id", memberId, "events", new ArrayList<>(events),
                        "error", error == null ? null : Main.stackTrace(error));
            }
        }

        void stop(CloseOptions options) throws InterruptedException {
            closeOptions = options;
            stop = true;
            thread.join(30_000);
        }

        @Override
        public void close() throws InterruptedException {
            stop(closeOptions);
        }
    }

    static boolean covers(String topic, int partitions, Member... members) {
        Set<TopicPartition> all = new HashSet<>();
        int total = 0;
        for (Member m : members) {
            if (m.assignment.isEmpty()) return false;
            all.addAll(m.assignment);
            total += m.assignment.size();
        }
        return all.size() == partitions && total == partitions;
    }

    /** Snapshot of the members' state at a step, for the report. */
    static Map<String, Object> step(String what, boolean reached, Member... members) {
        List<Object> ms = new ArrayList<>();
        for (Member m : members) ms.add(map("name", m.name, "assignment", Ctx.partitions(m.assignment), "generation", m.generation));
        return map("step", what, "reached", reached, "members", ms);
    }

    /**
     * Two members joining and one leaving, with the given assignor: A alone owns every partition,
     * then A and B split them, then A owns them all again after B leaves.
     */
    static Map<String, Object> rebalance(Ctx ctx, String assignorClass) throws Exception {
        String topic = ctx.name("t");
        String group = ctx.name("g");
        int partitions = 4;
        ctx.createTopic(topic, partitions);
        try (KafkaProducer<byte[], byte[]> p = ctx.producer()) {
            ProducerScenarios.sendAll(p, topic, null, 0, 40);
        }
        Object[] config = {ConsumerConfig.GROUP_ID_CONFIG, group, ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic",
                ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignorClass};
        List<Object> steps = new ArrayList<>();
        Member a = new Member(ctx, "a", topic, config);
        Member b = null;
        try {
            steps.add(step("a alone", Ctx.waitFor(() -> covers(topic, partitions, a), 30_000), a));
            b = new Member(ctx, "b", topic, config);
            Member bb = b;
            steps.add(step("a and b", Ctx.waitFor(() -> covers(topic, partitions, a, bb) && a.generation == bb.generation, 30_000), a, b));
            int records = a.records + b.records;
            Map<String, Object> beforeLeave = b.report();
            b.stop(CloseOptions.timeout(Duration.ofSeconds(10)));
            steps.add(step("b left", Ctx.waitFor(() -> covers(topic, partitions, a), 30_000), a));
            return map("topic", topic, "group", group, "partitions", partitions, "steps", steps,
                    "records_received", records, "a", a.report(), "b", beforeLeave);
        } finally {
            a.close();
            if (b != null) b.close();
        }
    }

    static Map<String, Object> range(Ctx ctx) throws Exception {
        return rebalance(ctx, RangeAssignor.class.getName());
    }

    static Map<String, Object> cooperativeSticky(Ctx ctx) throws Exception {
        return rebalance(ctx, CooperativeStickyAssignor.class.getName());
    }

    /**
     * Static membership (group.instance.id): a static member that closes without leaving and comes
     * back within the session timeout gets its partitions back with no rebalance (the generation
     * stays); the group lists its instance id; leaving explicitly empties the group.
     */
    static Map<String, Object> staticMembership(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        String group = ctx.name("g");
        ctx.createTopic(topic, 3);
        Object[] config = {ConsumerConfig.GROUP_ID_CONFIG, group, ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic",
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "static-1",
                // long enough for the restart below, so the member is not dropped meanwhile
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "30000"};
        Map<String, Object> result = map("topic", topic, "group", group);
        try (Admin admin = ctx.admin()) {
            Member first = new Member(ctx, "first", topic, config);
            boolean joined = Ctx.waitFor(() -> covers(topic, 3, first), 30_000);
            result.put("first", step("first joined", joined, first));
            result.put("described_first", describe(admin, group));
            // close without LeaveGroup: a static member's default, its place stays reserved
            first.stop(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.REMAIN_IN_GROUP)
                    .withTimeout(Duration.ofSeconds(10)));
            result.put("described_after_close", describe(admin, group));

            Member second = new Member(ctx, "second", topic, config);
            boolean rejoined = Ctx.waitFor(() -> covers(topic, 3, second), 30_000);
            result.put("second", step("second joined", rejoined, second));
            result.put("second_events", second.report().get("events"));
            result.put("described_second", describe(admin, group));
            second.stop(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                    .withTimeout(Duration.ofSeconds(10)));
            Supplier<Map<String, Object>> d = () -> {
                try {
                    return describe(admin, group);
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            };
            Ctx.waitFor(() -> ((List<?>) d.get().get("members")).isEmpty(), 15_000);
            result.put("described_after_leave", d.get());
        }
        return result;
    }

    static Map<String, Object> describe(Admin admin, String group) throws Exception {
        ConsumerGroupDescription g = admin.describeConsumerGroups(List.of(group)).all().get(20, TimeUnit.SECONDS).get(group);
        List<Object> members = new ArrayList<>();
        for (MemberDescription m : g.members()) {
            Optional<String> instance = m.groupInstanceId();
            members.add(map("member_id", m.consumerId(), "instance_id", instance.orElse(null), "client_id", m.clientId(),
                    "host", m.host(), "assignment", Ctx.partitions(m.assignment().topicPartitions())));
        }
        return map("group", g.groupId(), "state", g.groupState(), "type", g.type(), "assignor", g.partitionAssignor(),
                "coordinator", g.coordinator() == null ? null : g.coordinator().id(), "members", members);
    }
}
