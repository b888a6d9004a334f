package ringlog.compat;

import static ringlog.compat.Ctx.map;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;

/** Consumer scenarios without group rebalancing: assignment, seeking, timestamps, commits. */
final class ConsumerScenarios {
    private ConsumerScenarios() {}

    // Base of the records' explicit timestamps: a whole second an hour ago, so that the records
    // are recent enough for the topics' time retention (7 days) not to delete them mid-scenario
    static final long BASE_TS = (System.currentTimeMillis() / 1000) * 1000 - 3_600_000L;

    /**
     * Manual assignment: seekToBeginning, seek, seekToEnd, position, beginning/endOffsets and
     * offsetsForTimes over records with known timestamps (record i at BASE_TS + i s, partition i % 2).
     */
    static Map<String, Object> assign(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        ctx.createTopic(topic, 2);
        List<Object> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = ctx.producer()) {
            for (int i = 0; i < 100; i++) {
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, i % 2, BASE_TS + i * 1000L,
                        ("k" + i).getBytes(StandardCharsets.UTF_8), ("v" + i).getBytes(StandardCharsets.UTF_8));
                sent.add(Ctx.sent(r, p.send(r).get(30, TimeUnit.SECONDS)));
            }
        }
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        Map<String, Object> result = map("topic", topic, "sent", sent, "base_ts", BASE_TS);
        try (KafkaConsumer<byte[], byte[]> c = ctx.consumer()) {
            c.assign(List.of(p0, p1));
            result.put("assignment", Ctx.partitions(c.assignment()));
            c.seekToBeginning(List.of(p0, p1));
            result.put("position_after_seek_to_beginning", map("0", c.position(p0), "1", c.position(p1)));
            List<Object> all = new ArrayList<>();
            for (ConsumerRecord<byte[], byte[]> r : Ctx.pollRecords(c, 100, 30_000)) all.add(Ctx.read(r));
            result.put("all", all);
            result.put("position_after_reading", map("0", c.position(p0), "1", c.position(p1)));

            c.seek(p0, 10);
            c.pause(List.of(p1));
            List<Object> fromTen = new ArrayList<>();
            for (ConsumerRecord<byte[], byte[]> r : Ctx.pollRecords(c, 40, 30_000)) fromTen.add(Ctx.read(r));
            result.put("after_seek_p0_10", fromTen);
            c.resume(List.of(p1));

            c.seekToEnd(List.of(p0, p1));
            result.put("position_after_seek_to_end", map("0", c.position(p0), "1", c.position(p1)));
            result.put("beginning_offsets", offsets(c.beginningOffsets(List.of(p0, p1))));
            result.put("end_offsets", offsets(c.endOffsets(List.of(p0, p1))));

            // record 41 (partition 1, offset 20) is at BASE_TS + 41 s; asking for 40.5 s finds it
            // on partition 1 and record 42 (offset 21) on partition 0
            Map<TopicPartition, Long> query = new HashMap<>();
            query.put(p0, BASE_TS + 40_500);
            query.put(p1, BASE_TS + 40_500);
            Map<String, Object> times = new LinkedHashMap<>();
            for (Map.Entry<TopicPartition, OffsetAndTimestamp> e : c.offsetsForTimes(query).entrySet()) {
                OffsetAndTimestamp ot = e.getValue();
                times.put(String.valueOf(e.getKey().partition()), ot == null ? null : map("offset", ot.offset(), "timestamp", ot.timestamp()));
            }
            result.put("offsets_for_times", times);
            // a timestamp after every record: no offset (null), as Kafka answers
            Map<TopicPartition, OffsetAndTimestamp> future = c.offsetsForTimes(Map.of(p0, BASE_TS + 1_000_000));
            result.put("offsets_for_future_time", future.get(p0) == null ? null : future.get(p0).offset());
            // and one before all of them: the first offset
            Map<TopicPartition, OffsetAndTimestamp> past = c.offsetsForTimes(Map.of(p1, 0L));
            result.put("offsets_for_time_zero", past.get(p1) == null ? null : past.get(p1).offset());
        }
        return result;
    }

    private static Map<String, Object> offsets(Map<TopicPartition, Long> m) {
        Map<String, Object> out = new LinkedHashMap<>();
        m.entrySet().stream().sorted(Map.Entry.comparingByKey((a, b) -> Integer.compare(a.partition(), b.partition())))
                .forEach(e -> out.put(String.valueOf(e.getKey().partition()), e.getValue()));
        return out;
    }

    /**
     * subscribe() with a group (classic protocol): read everything, commitSync some offsets
     * explicitly and the positions implicitly, committed() returns them, and a second consumer of
     * the group resumes where the first committed.
     */
    static Map<String, Object> groupCommit(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        String group = ctx.name("g");
        ctx.createTopic(topic, 3);
        try (KafkaProducer<byte[], byte[]> p = ctx.producer()) {
            ProducerScenarios.sendAll(p, topic, null, 0, 90);
        }
        Map<String, Object> result = map("topic", topic, "group", group);
        Set<TopicPartition> tps = Set.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1), new TopicPartition(topic, 2));
        try (KafkaConsumer<byte[], byte[]> c = ctx.consumer(ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic")) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<byte[], byte[]>> records = Ctx.pollRecords(c, 90, 30_000);
            result.put("first_read", records.size());
            result.put("assignment", Ctx.partitions(c.assignment()));
            result.put("generation", c.groupMetadata().generationId());
            result.put("member_id", c.groupMetadata().memberId());
            // commit an explicit offset with metadata on partition 0 and the current positions elsewhere
            Map<TopicPartition, OffsetAndMetadata> explicit = new HashMap<>();
            explicit.put(new TopicPartition(topic, 0), new OffsetAndMetadata(5, "five"));
            explicit.put(new TopicPartition(topic, 1), new OffsetAndMetadata(c.position(new TopicPartition(topic, 1))));
            explicit.put(new TopicPartition(topic, 2), new OffsetAndMetadata(c.position(new TopicPartition(topic, 2))));
            c.commitSync(explicit, Duration.ofSeconds(10));
            Map<String, Object> committed = new LinkedHashMap<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : c.committed(tps, Duration.ofSeconds(10)).entrySet()) {
                OffsetAndMetadata om = e.getValue();
                committed.put(String.valueOf(e.getKey().partition()), om == null ? null : map("offset", om.offset(), "metadata", om.metadata()));
            }
            result.put("committed", committed);
            result.put("positions", map(
                    "0", c.position(new TopicPartition(topic, 0)),
                    "1", c.position(new TopicPartition(topic, 1)),
                    "2", c.position(new TopicPartition(topic, 2))));
        }
        try (KafkaConsumer<byte[], byte[]> c = ctx.consumer(ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic")) {
            c.subscribe(List.of(topic));
            List<Object> resumed = new ArrayList<>();
            // only partition 0 has records past its committed offset
            long expected = (long) ((Map<?, ?>) result.get("positions")).get("0") - 5;
            for (ConsumerRecord<byte[], byte[]> r : Ctx.pollRecords(c, (int) expected, 30_000)) resumed.add(Ctx.read(r));
            // a little more polling would show records beyond those: there must be none
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) resumed.add(Ctx.read(r));
            result.put("resumed", resumed);
        }
        return result;
    }
}
