package ringlog.compat;

import static ringlog.compat.Ctx.map;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.clients.producer.RoundRobinPartitioner;
import org.apache.kafka.common.TopicPartition;

/** Producer scenarios. The Python side reads the stored batches back and compares. */
final class ProducerScenarios {
    private ProducerScenarios() {}

    /** Sends records 0..n-1 (optionally to one partition), waits for every ack, reports them. */
    static List<Object> sendAll(KafkaProducer<byte[], byte[]> producer, String topic, Integer partition, int from, int n)
            throws Exception {
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        List<Future<RecordMetadata>> acks = new ArrayList<>();
        for (int i = from; i < from + n; i++) {
            ProducerRecord<byte[], byte[]> r = Ctx.testRecord(topic, partition, i);
            records.add(r);
            acks.add(producer.send(r));
        }
        producer.flush();
        List<Object> out = new ArrayList<>();
        for (int i = 0; i < records.size(); i++) {
            out.add(Ctx.sent(records.get(i), acks.get(i).get(30, TimeUnit.SECONDS)));
        }
        return out;
    }

    /** Reads every partition of `topic` from the beginning with an assigned consumer. */
    static List<Object> readAll(Ctx ctx, String topic, int partitions, int expected) {
        try (KafkaConsumer<byte[], byte[]> c = ctx.consumer()) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) tps.add(new TopicPartition(topic, p));
            c.assign(tps);
            c.seekToBeginning(tps);
            List<Object> out = new ArrayList<>();
            for (ConsumerRecord<byte[], byte[]> r : Ctx.pollRecords(c, expected, 30_000)) out.add(Ctx.read(r));
            return out;
        }
    }

    /** acks=0, 1 and all in turn on one partition: acks=0 gets no offsets back, the others do. */
    static Map<String, Object> acks(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        ctx.createTopic(topic, 1);
        Map<String, Object> result = map("topic", topic);
        int from = 0;
        for (String acks : List.of("0", "1", "all")) {
            // idempotence needs acks=all; for 0 and 1 it is turned off explicitly
            String idempotent = acks.equals("all") ? "true" : "false";
            try (KafkaProducer<byte[], byte[]> p = ctx.producer(
                    ProducerConfig.ACKS_CONFIG, acks, ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, idempotent,
                    ProducerConfig.LINGER_MS_CONFIG, 5)) {
                result.put("acks_" + acks, sendAll(p, topic, 0, from, 40));
            }
            from += 40;
        }
        result.put("read", readAll(ctx, topic, 1, 120));
        return result;
    }

    /** Every codec through an idempotent producer; records read back by the Java consumer too. */
    static Map<String, Object> codecs(Ctx ctx) throws Exception {
        Map<String, Object> result = map();
        for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
            String topic = ctx.name(codec);
            ctx.createTopic(topic, 3);
            List<Object> sent;
            try (KafkaProducer<byte[], byte[]> p = ctx.producer(
                    ProducerConfig.COMPRESSION_TYPE_CONFIG, codec, ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true",
                    ProducerConfig.ACKS_CONFIG, "all", ProducerConfig.LINGER_MS_CONFIG, 50)) {
                sent = sendAll(p, topic, null, 0, 150);
            }
            result.put(codec, map("topic", topic, "sent", sent, "read", readAll(ctx, topic, 3, sent.size())));
        }
        return result;
    }

    /** Many records, five requests in flight per connection, several partitions: sequence numbers. */
    static Map<String, Object> idempotent(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        ctx.createTopic(topic, 2);
        List<Object> sent;
        try (KafkaProducer<byte[], byte[]> p = ctx.producer(
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true", ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 5,
                ProducerConfig.BATCH_SIZE_CONFIG, 2048, ProducerConfig.LINGER_MS_CONFIG, 0)) {
            sent = sendAll(p, topic, null, 0, 2000);
        }
        return map("topic", topic, "sent", sent);
    }

    /**
     * The default partitioner (murmur2 of the key; sticky batches for null keys), an explicit
     * partition, and RoundRobinPartitioner.
     */
    static Map<String, Object> partitioners(Ctx ctx) throws Exception {
        String keyed = ctx.name("keyed");
        String robin = ctx.name("robin");
        ctx.createTopic(keyed, 6);
        ctx.createTopic(robin, 6);
        List<Object> keyedSent = new ArrayList<>();
        List<Object> explicit = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = ctx.producer(ProducerConfig.LINGER_MS_CONFIG, 5)) {
            List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < 200; i++) {
                byte[] key = ("user-" + i).getBytes(StandardCharsets.UTF_8);
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(keyed, key, ("v" + i).getBytes(StandardCharsets.UTF_8));
                records.add(r);
                acks.add(p.send(r));
            }
            for (int i = 0; i < 12; i++) {
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(keyed, 5, ("user-" + i).getBytes(StandardCharsets.UTF_8),
                        ("explicit" + i).getBytes(StandardCharsets.UTF_8));
                explicit.add(Ctx.sent(r, p.send(r).get(30, TimeUnit.SECONDS)));
            }
            for (int i = 0; i < records.size(); i++) {
                keyedSent.add(Ctx.sent(records.get(i), acks.get(i).get(30, TimeUnit.SECONDS)));
            }
        }
        List<Object> robinSent;
        try (KafkaProducer<byte[], byte[]> p = ctx.producer(
                ProducerConfig.PARTITIONER_CLASS_CONFIG, RoundRobinPartitioner.class.getName(),
                ProducerConfig.LINGER_MS_CONFIG, 0)) {
            robinSent = new ArrayList<>();
            for (int i = 0; i < 60; i++) {
                // one at a time, so the partitioner's choice is not mixed with batching
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(robin, null, ("r" + i).getBytes(StandardCharsets.UTF_8));
                robinSent.add(Ctx.sent(r, p.send(r).get(30, TimeUnit.SECONDS)));
            }
        }
        List<Object> unkeyed;
        try (KafkaProducer<byte[], byte[]> p = ctx.producer(ProducerConfig.LINGER_MS_CONFIG, 0)) {
            unkeyed = sendAllUnkeyed(p, robin, 100);
        }
        return map("keyed_topic", keyed, "keyed", keyedSent, "explicit", explicit, "robin_topic", robin,
                "robin", robinSent, "unkeyed", unkeyed);
    }

    private static List<Object> sendAllUnkeyed(KafkaProducer<byte[], byte[]> p, String topic, int n) throws Exception {
        List<Object> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, null, ("u" + i).getBytes(StandardCharsets.UTF_8));
            out.add(Ctx.sent(r, p.send(r).get(30, TimeUnit.SECONDS)));
        }
        p.flush();
        return out;
    }
}
