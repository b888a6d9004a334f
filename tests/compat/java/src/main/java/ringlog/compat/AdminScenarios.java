package ringlog.compat;

import static ringlog.compat.Ctx.map;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.DescribeConsumerGroupsOptions;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;
import org.apache.kafka.clients.admin.AlterClientQuotasOptions;

/** AdminClient scenarios: every admin API ringlog serves, results reported for the Python side. */
final class AdminScenarios {
    private AdminScenarios() {}

    static final long TIMEOUT_S = 20;

    static <T> T get(KafkaFuture<T> f) throws Exception {
        return f.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** The exception class a future failed with (null if it succeeded), so errors can be asserted. */
    static String failure(KafkaFuture<?> f) throws Exception {
        try {
            f.get(TIMEOUT_S, TimeUnit.SECONDS);
            return null;
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        }
    }

    static Map<String, Object> describeTopic(TopicDescription d) {
        List<Object> parts = new ArrayList<>();
        for (TopicPartitionInfo p : d.partitions()) {
            parts.add(map("partition", p.partition(), "leader", p.leader() == null ? null : p.leader().id(),
                    "replicas", p.replicas().stream().map(Node::id).toList(), "isr", p.isr().stream().map(Node::id).toList()));
        }
        return map("name", d.name(), "topic_id", d.topicId() == null ? null : d.topicId().toString(),
                "internal", d.isInternal(), "partitions", parts,
                "authorized_operations", d.authorizedOperations() == null ? null : ops(d.authorizedOperations()));
    }

    static List<Object> ops(Set<AclOperation> ops) {
        return new ArrayList<>(new TreeSet<>(ops.stream().map(AclOperation::name).toList()));
    }

    /** Create (with configs, validate-only, duplicates), list, describe, add partitions, delete. */
    static Map<String, Object> topics(Ctx ctx) throws Exception {
        String a = ctx.name("a");
        String b = ctx.name("b");
        String dry = ctx.name("dry");
        Map<String, Object> result = map("a", a, "b", b, "dry", dry);
        try (Admin admin = ctx.admin()) {
            CreateTopicsResult created = admin.createTopics(List.of(
                    new NewTopic(a, 3, (short) 1).configs(Map.of("retention.ms", "3600000", "cleanup.policy", "compact")),
                    new NewTopic(b, java.util.Optional.empty(), java.util.Optional.empty())));
            get(created.all());
            result.put("created", map(
                    "a_partitions", get(created.numPartitions(a)), "a_replication", get(created.replicationFactor(a)),
                    "a_topic_id", get(created.topicId(a)).toString(),
                    "a_configs", configMap(get(created.config(a))),
                    "b_partitions", get(created.numPartitions(b))));
            result.put("create_existing", failure(admin.createTopics(List.of(new NewTopic(a, 1, (short) 1))).all()));
            result.put("create_bad_replication", failure(admin.createTopics(List.of(new NewTopic(ctx.name("rf"), 1, (short) 3))).all()));
            result.put("validate_only", failure(admin.createTopics(List.of(new NewTopic(dry, 2, (short) 1)),
                    new CreateTopicsOptions().validateOnly(true)).all()));
            result.put("listed", new TreeSet<>(get(admin.listTopics().names())));
            result.put("listed_internal", new TreeSet<>(get(admin.listTopics(new ListTopicsOptions().listInternal(true)).names())));
            Map<String, TopicDescription> described = get(admin.describeTopics(List.of(a, b)).allTopicNames());
            result.put("described", map("a", describeTopic(described.get(a)), "b", describeTopic(described.get(b))));
            result.put("describe_unknown", failure(admin.describeTopics(List.of(ctx.name("nope"))).allTopicNames()));
            result.put("described_with_operations", describeTopic(get(admin.describeTopics(List.of(a),
                    new DescribeTopicsOptions().includeAuthorizedOperations(true)).allTopicNames()).get(a)));

            get(admin.createPartitions(Map.of(a, NewPartitions.increaseTo(5))).all());
            result.put("create_partitions_fewer", failure(admin.createPartitions(Map.of(a, NewPartitions.increaseTo(2))).all()));
            result.put("described_after_create_partitions",
                    describeTopic(get(admin.describeTopics(List.of(a)).allTopicNames()).get(a)));

            get(admin.deleteTopics(List.of(b)).all());
            result.put("delete_unknown", failure(admin.deleteTopics(List.of(ctx.name("nope"))).all()));
            // deletion is synchronous on a single node: the next listing no longer has it
            result.put("listed_after_delete", new TreeSet<>(get(admin.listTopics().names())));
        }
        return result;
    }

    static Map<String, Object> configMap(Config config) {
        Map<String, Object> out = new LinkedHashMap<>();
        for (ConfigEntry e : config.entries()) {
            List<Object> synonyms = new ArrayList<>();
            for (ConfigEntry.ConfigSynonym s : e.synonyms()) synonyms.add(map("name", s.name(), "value", s.value(), "source", s.source()));
            out.put(e.name(), map("value", e.value(), "source", e.source(), "read_only", e.isReadOnly(),
                    "sensitive", e.isSensitive(), "type", e.type(), "synonyms", synonyms,
                    "has_documentation", e.documentation() != null && !e.documentation().isEmpty()));
        }
        return out;
    }

    /** describeConfigs of a topic and the broker, incrementalAlterConfigs SET/DELETE/APPEND/SUBTRACT. */
    static Map<String, Object> configs(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        ctx.createTopic(topic, 1, Map.of("retention.ms", "7200000"));
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        ConfigResource brokerRes = new ConfigResource(ConfigResource.Type.BROKER, "0");
        DescribeConfigsOptions full = new DescribeConfigsOptions().includeSynonyms(true).includeDocumentation(true);
        Map<String, Object> result = map("topic", topic);
        try (Admin admin = ctx.admin()) {
            result.put("initial", configMap(get(admin.describeConfigs(List.of(res), full).all()).get(res)));
            result.put("broker", configMap(get(admin.describeConfigs(List.of(brokerRes)).all()).get(brokerRes)));

            Map<ConfigResource, Collection<AlterConfigOp>> ops = new HashMap<>();
            ops.put(res, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "60000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", "500000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND)));
            get(admin.incrementalAlterConfigs(ops).all());
            result.put("after_set", configMap(get(admin.describeConfigs(List.of(res)).all()).get(res)));

            ops.put(res, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE),
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "delete"), AlterConfigOp.OpType.SUBTRACT)));
            get(admin.incrementalAlterConfigs(ops).all());
            result.put("after_delete", configMap(get(admin.describeConfigs(List.of(res)).all()).get(res)));

            ops.put(res, List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "not-a-number"), AlterConfigOp.OpType.SET)));
            result.put("set_invalid", failure(admin.incrementalAlterConfigs(ops).all()));
            ops.clear();
            ops.put(brokerRes, List.of(new AlterConfigOp(new ConfigEntry("log.retention.ms", "1000"), AlterConfigOp.OpType.SET)));
            result.put("set_broker", failure(admin.incrementalAlterConfigs(ops).all()));
            // validate-only changes nothing
            ops.clear();
            ops.put(res, List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "1234"), AlterConfigOp.OpType.SET)));
            get(admin.incrementalAlterConfigs(ops, new org.apache.kafka.clients.admin.AlterConfigsOptions().validateOnly(true)).all());
            result.put("after_validate_only", configMap(get(admin.describeConfigs(List.of(res)).all()).get(res)));
        }
        return result;
    }

    /** listOffsets (earliest, latest, max timestamp, by timestamp) and deleteRecords. */
    static Map<String, Object> offsetsAndDeleteRecords(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        ctx.createTopic(topic, 2);
        long base = ConsumerScenarios.BASE_TS;
        try (KafkaProducer<byte[], byte[]> p = ctx.producer()) {
            for (int i = 0; i < 50; i++) {
                // partition 0: timestamps increase except record 30, the largest
                long ts = i == 30 ? base + 1_000_000 : base + i * 1000L;
                p.send(new ProducerRecord<>(topic, 0, ts, null, ("v" + i).getBytes())).get(30, TimeUnit.SECONDS);
            }
            p.send(new ProducerRecord<>(topic, 1, base, null, "only".getBytes())).get(30, TimeUnit.SECONDS);
        }
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        Map<String, Object> result = map("topic", topic, "base_ts", base);
        try (Admin admin = ctx.admin()) {
            result.put("earliest", listOffsets(admin, p0, p1, OffsetSpec.earliest()));
            result.put("latest", listOffsets(admin, p0, p1, OffsetSpec.latest()));
            result.put("max_timestamp", listOffsets(admin, p0, p1, OffsetSpec.maxTimestamp()));
            result.put("for_timestamp", listOffsets(admin, p0, p1, OffsetSpec.forTimestamp(base + 10_500)));

            Map<TopicPartition, RecordsToDelete> del = Map.of(p0, RecordsToDelete.beforeOffset(20));
            Map<String, Object> low = new LinkedHashMap<>();
            for (Map.Entry<TopicPartition, KafkaFuture<DeletedRecords>> e : admin.deleteRecords(del).lowWatermarks().entrySet()) {
                low.put(String.valueOf(e.getKey().partition()), get(e.getValue()).lowWatermark());
            }
            result.put("delete_records_low_watermark", low);
            result.put("delete_records_beyond_end", failure(admin.deleteRecords(Map.of(p1, RecordsToDelete.beforeOffset(99))).all()));
            result.put("earliest_after_delete", listOffsets(admin, p0, p1, OffsetSpec.earliest()));
        }
        try (KafkaConsumer<byte[], byte[]> c = ctx.consumer()) {
            c.assign(List.of(p0));
            c.seekToBeginning(List.of(p0));
            result.put("consumer_position_after_delete", c.position(p0));
            result.put("consumer_first_offset_after_delete", Ctx.pollRecords(c, 1, 10_000).get(0).offset());
        }
        return result;
    }

    static Map<String, Object> listOffsets(Admin admin, TopicPartition p0, TopicPartition p1, OffsetSpec spec) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> all = get(admin.listOffsets(Map.of(p0, spec, p1, spec)).all());
        for (TopicPartition tp : List.of(p0, p1)) {
            ListOffsetsResult.ListOffsetsResultInfo info = all.get(tp);
            out.put(String.valueOf(tp.partition()), map("offset", info.offset(), "timestamp", info.timestamp()));
        }
        return out;
    }

    /**
     * Client quotas (KIP-546): alter a user quota and a default client-id quota, describe them
     * (all, one user strictly, the default client id), a validateOnly alteration that changes
     * nothing, an unknown key's failure, then remove everything.
     */
    static Map<String, Object> clientQuotas(Ctx ctx) throws Exception {
        Map<String, Object> result = new LinkedHashMap<>();
        try (Admin admin = ctx.admin()) {
            ClientQuotaEntity alice = new ClientQuotaEntity(Map.of(ClientQuotaEntity.USER, "alice"));
            Map<String, String> defaultClient = new HashMap<>();
            defaultClient.put(ClientQuotaEntity.CLIENT_ID, null);
            ClientQuotaEntity anyClient = new ClientQuotaEntity(defaultClient);
            get(admin.alterClientQuotas(List.of(
                    new ClientQuotaAlteration(alice, List.of(new ClientQuotaAlteration.Op("producer_byte_rate", 1048576.0),
                            new ClientQuotaAlteration.Op("consumer_byte_rate", 2097152.0))),
                    new ClientQuotaAlteration(anyClient, List.of(new ClientQuotaAlteration.Op("consumer_byte_rate", 4096.0)))))
                    .all());
            get(admin.alterClientQuotas(List.of(new ClientQuotaAlteration(
                    new ClientQuotaEntity(Map.of(ClientQuotaEntity.USER, "carol")),
                    List.of(new ClientQuotaAlteration.Op("producer_byte_rate", 1.0)))),
                    new AlterClientQuotasOptions().validateOnly(true)).all());
            result.put("all", quotas(get(admin.describeClientQuotas(ClientQuotaFilter.all()).entities())));
            result.put("alice_strict", quotas(get(admin.describeClientQuotas(ClientQuotaFilter.containsOnly(
                    List.of(ClientQuotaFilterComponent.ofEntity(ClientQuotaEntity.USER, "alice")))).entities())));
            result.put("default_client", quotas(get(admin.describeClientQuotas(ClientQuotaFilter.contains(
                    List.of(ClientQuotaFilterComponent.ofDefaultEntity(ClientQuotaEntity.CLIENT_ID)))).entities())));
            try {
                get(admin.alterClientQuotas(List.of(new ClientQuotaAlteration(alice,
                        List.of(new ClientQuotaAlteration.Op("bytes_per_second", 1.0))))).all());
                result.put("unknown_key", null);
            } catch (ExecutionException e) {
                result.put("unknown_key", e.getCause().getClass().getSimpleName() + ": " + e.getCause().getMessage());
            }
            get(admin.alterClientQuotas(List.of(
                    new ClientQuotaAlteration(alice, List.of(new ClientQuotaAlteration.Op("producer_byte_rate", null),
                            new ClientQuotaAlteration.Op("consumer_byte_rate", null))),
                    new ClientQuotaAlteration(anyClient, List.of(new ClientQuotaAlteration.Op("consumer_byte_rate", null)))))
                    .all());
            result.put("after_removal", quotas(get(admin.describeClientQuotas(ClientQuotaFilter.all()).entities())));
        }
        return result;
    }

    private static List<Object> quotas(Map<ClientQuotaEntity, Map<String, Double>> found) {
        List<Object> out = new ArrayList<>();
        for (Map.Entry<ClientQuotaEntity, Map<String, Double>> e : found.entrySet()) {
            out.add(map("entity", new java.util.TreeMap<>(e.getKey().entries()), "values", new java.util.TreeMap<>(e.getValue())));
        }
        out.sort(java.util.Comparator.comparing(Object::toString));
        return out;
    }

    /** describeCluster, with and without the authorized operations. */
    static Map<String, Object> cluster(Ctx ctx) throws Exception {
        try (Admin admin = ctx.admin()) {
            DescribeClusterResult plain = admin.describeCluster();
            List<Object> nodes = new ArrayList<>();
            for (Node n : get(plain.nodes())) nodes.add(map("id", n.id(), "host", n.host(), "port", n.port(), "rack", n.rack()));
            Map<String, Object> result = map("cluster_id", get(plain.clusterId()), "controller", get(plain.controller()).id(),
                    "nodes", nodes, "authorized_operations_not_asked", get(plain.authorizedOperations()) == null);
            Set<AclOperation> ops = get(admin.describeCluster(new DescribeClusterOptions().includeAuthorizedOperations(true))
                    .authorizedOperations());
            result.put("authorized_operations", ops == null ? null : ops(ops));
            return result;
        }
    }

    /**
     * Group administration: list (both the new listGroups and listConsumerGroups), describe an
     * active and an empty group, list/alter/delete committed offsets, delete the group.
     */
    @SuppressWarnings("deprecation")
    static Map<String, Object> groups(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        String group = ctx.name("g");
        ctx.createTopic(topic, 2);
        try (KafkaProducer<byte[], byte[]> p = ctx.producer()) {
            ProducerScenarios.sendAll(p, topic, null, 0, 20);
        }
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        Map<String, Object> result = map("topic", topic, "group", group);
        try (Admin admin = ctx.admin()) {
            try (KafkaConsumer<byte[], byte[]> c = ctx.consumer(ConsumerConfig.GROUP_ID_CONFIG, group,
                    ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic")) {
                c.subscribe(List.of(topic));
                Ctx.pollRecords(c, 20, 30_000);
                c.commitSync(Map.of(p0, new OffsetAndMetadata(3, "m0"), p1, new OffsetAndMetadata(4)));
                result.put("described_active", GroupScenarios.describe(admin, group));
                Set<AclOperation> groupOps = get(admin.describeConsumerGroups(List.of(group),
                        new DescribeConsumerGroupsOptions().includeAuthorizedOperations(true)).all()).get(group).authorizedOperations();
                result.put("group_authorized_operations", groupOps == null ? null : ops(groupOps));
                result.put("delete_active", failure(admin.deleteConsumerGroups(List.of(group)).all()));
                result.put("alter_offsets_active", failure(admin.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(1))).all()));
            }
            result.put("described_empty", GroupScenarios.describe(admin, group));
            List<Object> listed = new ArrayList<>();
            for (GroupListing g : get(admin.listGroups().all())) {
                if (g.groupId().equals(group)) {
                    listed.add(map("group", g.groupId(), "type", g.type().orElse(null), "protocol", g.protocol(),
                            "state", g.groupState().orElse(null)));
                }
            }
            result.put("list_groups", listed);
            List<Object> consumerGroups = new ArrayList<>();
            for (ConsumerGroupListing g : get(admin.listConsumerGroups().all())) {
                if (g.groupId().equals(group)) consumerGroups.add(map("group", g.groupId(), "simple", g.isSimpleConsumerGroup(),
                        "state", g.groupState().orElse(null)));
            }
            result.put("list_consumer_groups", consumerGroups);
            result.put("offsets", groupOffsets(admin, group));

            get(admin.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(7, "seven"), p1, new OffsetAndMetadata(0))).all());
            result.put("offsets_after_alter", groupOffsets(admin, group));

            get(admin.deleteConsumerGroupOffsets(group, Set.of(p1)).all());
            result.put("offsets_after_delete", groupOffsets(admin, group));

            get(admin.deleteConsumerGroups(List.of(group)).all());
            // DescribeGroups v6 (KIP-1043) answers GROUP_ID_NOT_FOUND for a group that does not exist
            result.put("describe_after_delete", failure(admin.describeConsumerGroups(List.of(group)).all()));
            boolean listedAfter = get(admin.listGroups().all()).stream().anyMatch(g -> g.groupId().equals(group));
            result.put("listed_after_delete", listedAfter);
            result.put("delete_unknown", failure(admin.deleteConsumerGroups(List.of(ctx.name("nope"))).all()));
        }
        return result;
    }

    static Map<String, Object> groupOffsets(Admin admin, String group) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        Map<TopicPartition, OffsetAndMetadata> offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        offsets.entrySet().stream().sorted(Map.Entry.comparingByKey((a, b) -> Integer.compare(a.partition(), b.partition())))
                .forEach(e -> out.put(String.valueOf(e.getKey().partition()),
                        e.getValue() == null ? null : map("offset", e.getValue().offset(), "metadata", e.getValue().metadata())));
        return out;
    }

    /** describeLogDirs and describeProducers (kafka-log-dirs.sh, kafka-transactions.sh describe-producers). */
    static Map<String, Object> logDirsAndProducers(Ctx ctx) throws Exception {
        String topic = ctx.name("t");
        ctx.createTopic(topic, 2);
        try (KafkaProducer<byte[], byte[]> p = ctx.producer(
                org.apache.kafka.clients.producer.ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true")) {
            ProducerScenarios.sendAll(p, topic, 0, 0, 25);
        }
        Map<String, Object> result = map("topic", topic);
        try (Admin admin = ctx.admin()) {
            Map<Integer, Map<String, org.apache.kafka.clients.admin.LogDirDescription>> dirs =
                    get(admin.describeLogDirs(List.of(0)).allDescriptions());
            List<Object> out = new ArrayList<>();
            for (Map.Entry<String, org.apache.kafka.clients.admin.LogDirDescription> e : dirs.get(0).entrySet()) {
                Map<String, Object> replicas = new LinkedHashMap<>();
                e.getValue().replicaInfos().forEach((tp, info) -> {
                    if (tp.topic().equals(topic)) {
                        replicas.put(String.valueOf(tp.partition()), map("size", info.size(), "offset_lag", info.offsetLag(),
                                "future", info.isFuture()));
                    }
                });
                out.add(map("path", e.getKey(), "error", e.getValue().error() == null ? null : e.getValue().error().getClass().getSimpleName(),
                        "total_bytes", e.getValue().totalBytes().orElse(-1L), "usable_bytes", e.getValue().usableBytes().orElse(-1L),
                        "replicas", replicas));
            }
            result.put("log_dirs", out);
            TopicPartition p0 = new TopicPartition(topic, 0);
            TopicPartition p1 = new TopicPartition(topic, 1);
            Map<TopicPartition, org.apache.kafka.clients.admin.DescribeProducersResult.PartitionProducerState> producers =
                    get(admin.describeProducers(List.of(p0, p1)).all());
            Map<String, Object> states = new LinkedHashMap<>();
            producers.forEach((tp, state) -> {
                List<Object> ps = new ArrayList<>();
                for (org.apache.kafka.clients.admin.ProducerState s : state.activeProducers()) {
                    ps.add(map("producer_id", s.producerId(), "epoch", s.producerEpoch(), "last_sequence", s.lastSequence(),
                            "last_timestamp", s.lastTimestamp(), "coordinator_epoch", s.coordinatorEpoch().orElse(-1),
                            "txn_start_offset", s.currentTransactionStartOffset().orElse(-1L)));
                }
                states.put(String.valueOf(tp.partition()), ps);
            });
            result.put("producers", states);
        }
        return result;
    }
}
