"""Write the built-in question set: src/text_classifier/builtin_data/questions_{train,test}.jsonl.

    uv run --frozen python packages/text-classifier/scripts/make_questions.py

The questions were written for loraworks as templates x slot values plus free-form questions, so the
held-out split can be made of *whole templates* the model never saw in training (a split by row would
leak phrasings and overstate accuracy). The output is committed as source; this script documents how it
was made, and `tests/test_data.py` checks the committed files equal its output.

Classes (the issue's definitions, made concrete):
- 数据平台相关问题: using or operating the data platform: ETL, sync, scheduling, Hive/Spark/Flink/Kafka/...,
  tables, SQL on the platform, lineage, metadata, data quality, warehouse layers, permissions, data APIs.
- 通用对话: social talk with the assistant itself: greetings, thanks, farewells, who/what it is, what it
  can do, feelings, small talk, feedback on its answers.
- 无关问题: questions or requests about anything else (weather, food, travel, health, sport, shopping,
  school, other software and gadgets, general knowledge, ...).
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

DP, CHAT, OTHER = "数据平台相关问题", "通用对话", "无关问题"
LABELS = [DP, CHAT, OTHER]
PER_TEMPLATE = 8  # questions drawn per template (fewer when it has fewer slot combinations)
TEST_EVERY = 4  # every 4th template of a class (after a seeded shuffle) is held out
SEED = 20261122
OUT = Path(__file__).resolve().parents[1] / "src" / "text_classifier" / "builtin_data"

# ------------------------------------------------------------------ slot values
ENGINE = ["Hive", "Spark", "Flink", "Presto", "ClickHouse", "Doris", "StarRocks", "Impala", "Trino", "hive"]
STORE = ["HDFS", "HBase", "Kafka", "Hudi", "Iceberg", "MySQL", "ES", "Redis"]
TABLE = [
    "订单表",
    "用户表",
    "dwd_order_detail",
    "ods_user_log",
    "ads_gmv_daily",
    "dim_product",
    "埋点日志表",
    "支付流水表",
    "dws_trade_summary",
    "会员明细表",
]
TASK = [
    "ETL任务",
    "同步任务",
    "调度任务",
    "离线任务",
    "实时任务",
    "Spark作业",
    "Flink作业",
    "补数任务",
    "SQL任务",
    "etl job",
]
ERROR = [
    "OOM",
    "超时",
    "数据倾斜",
    "权限不足",
    "分区不存在",
    "Table not found",
    "connection refused",
    "GC overhead limit exceeded",
    "executor lost",
    "文件找不到",
]
CONCEPT = [
    "数据血缘",
    "元数据",
    "数据质量",
    "数仓分层",
    "数据字典",
    "指标口径",
    "维度建模",
    "数据治理",
    "拉链表",
    "缓慢变化维",
    "主数据",
    "数据资产目录",
]
LAYER = ["ODS", "DWD", "DWS", "ADS", "DIM", "ods", "dwd"]
TOOL = ["DolphinScheduler", "Airflow", "DataX", "Sqoop", "Azkaban", "Canal", "Flink CDC", "SeaTunnel"]
TIME = ["今天", "昨天晚上", "从上周开始", "这两天", "每天凌晨", "刚才", "早上"]
ROLE = ["分析师", "新同事", "产品经理", "外包同学", "实习生", "算法同学"]

GREET = ["你好", "您好", "哈喽", "hi", "Hello", "嗨", "早上好", "下午好", "晚上好", "在吗"]
YOU = ["你", "小助手", "机器人", "助手", "AI", "小智"]
THANK = ["谢谢", "多谢", "感谢", "thanks", "3q", "谢啦"]
PRAISE = ["你真棒", "你太厉害了", "回答得很清楚", "帮大忙了", "你好聪明", "很有用"]
FEEL = ["好累", "有点烦", "好无聊", "心情不错", "压力好大", "有点难过", "很开心", "困死了"]
BYE = ["再见", "拜拜", "bye", "先这样吧", "下次再聊", "我先下线了", "回头见"]

CITY = ["北京", "上海", "杭州", "成都", "西安", "厦门", "重庆", "广州", "深圳", "青岛", "大理"]
DISH = ["红烧肉", "宫保鸡丁", "西红柿炒鸡蛋", "麻婆豆腐", "可乐鸡翅", "酸菜鱼", "蛋炒饭", "糖醋排骨"]
FOOD = ["香蕉", "牛油果", "米饭", "燕麦", "酸奶", "坚果", "火锅", "奶茶"]
TEAM = ["湖人", "皇马", "国足", "巴萨", "勇士", "曼联", "中国女排"]
GENRE = ["科幻", "悬疑", "喜剧", "动画", "纪录片", "爱情"]
COUNTRY = ["澳大利亚", "加拿大", "巴西", "埃及", "土耳其", "新西兰", "瑞士"]
PHONE = ["iPhone 15", "华为Mate60", "小米14", "OPPO Find X7", "vivo X100"]
PET = ["猫", "狗", "仓鼠", "兔子", "金鱼", "鹦鹉"]
SUBJECT = ["高数", "英语四级", "考研政治", "雅思口语", "物理", "文言文"]
HOLIDAY = ["国庆", "春节", "五一", "端午", "中秋", "元旦"]
SYMPTOM = ["感冒", "嗓子疼", "失眠", "胃疼", "过敏", "发烧"]
APP = ["Photoshop", "Word", "PPT", "剪映", "微信", "Windows 11", "打印机"]
NUM = ["37", "128", "2.5", "999", "64", "15"]
PLANT = ["多肉", "绿萝", "月季", "发财树", "仙人掌", "兰花"]

# ------------------------------------------------------------------ templates
# (pattern, slots): every {name} in the pattern takes its values from slots[name].
TEMPLATES: dict[str, list[tuple[str, dict[str, list[str]]]]] = {
    DP: [
        ("{task}失败了怎么重跑？", {"task": TASK}),
        ("{engine}任务报{err}，该怎么处理", {"engine": ENGINE, "err": ERROR}),
        ("怎么查看{table}的数据血缘？", {"table": TABLE}),
        ("{concept}是什么意思，能举个例子吗？", {"concept": CONCEPT}),
        ("{layer}层和{layer2}层有啥区别", {"layer": LAYER[:3], "layer2": LAYER[2:5]}),
        ("如何申请{table}的查询权限", {"table": TABLE}),
        ("{time}{task}一直卡在running，是不是资源队列满了？", {"time": TIME, "task": TASK}),
        (
            "怎么把{src}的数据同步到{dst}",
            {"src": ["MySQL", "Oracle", "PostgreSQL", "MongoDB"], "dst": ENGINE[:3] + STORE[:4]},
        ),
        ("{tool}里怎么配置任务依赖？", {"tool": TOOL[:2] + ["调度平台", "调度系统"]}),
        ("{engine} SQL里窗口函数怎么写，想按天算累计值", {"engine": ENGINE}),
        ("{store}的消费延迟很高怎么排查", {"store": ["Kafka", "kafka", "Pulsar", "RocketMQ"]}),
        ("数据服务API的QPS上限是多少，{table}能开接口吗", {"table": TABLE}),
        ("元数据中心搜不到{table}，是没注册吗", {"table": TABLE}),
        (
            "{table}的{metric}和报表上对不上，口径是不是不一样？",
            {"table": TABLE, "metric": ["GMV", "日活", "订单量", "留存率", "客单价"]},
        ),
        (
            "我们组最近在做用户画像，要从{table}里取近30天活跃用户，但{engine}查得特别慢，有什么优化建议？",
            {"table": TABLE, "engine": ENGINE},
        ),
        ("小文件太多了，{engine}表要怎么合并？", {"engine": ENGINE[:4]}),
        (
            "数据质量规则里的{rule}怎么配置",
            {"rule": ["空值率", "唯一性校验", "波动阈值", "枚举值检查", "行数对比", "null rate"]},
        ),
        ("{task}跑完了但下游{table}还是没数据", {"task": TASK, "table": TABLE}),
        ("{engine}建表的时候分区字段怎么选比较好", {"engine": ENGINE}),
        ("{role}想看{table}，要走什么审批流程", {"role": ROLE, "table": TABLE}),
        ("调读任务能设置失败自动重试吗？", {}),
        ("数据清晰一般有哪些步骤", {}),
        (
            "{tool}同步{src}增量数据的时候丢数了怎么办",
            {"tool": TOOL[2:], "src": ["MySQL", "binlog", "Oracle", "SQLServer"]},
        ),
        ("实时数仓用Flink还是Spark Streaming好？", {}),
        ("数仓里{concept}一般怎么落地", {"concept": CONCEPT}),
        ("ETL pipeline里脏数据是怎么过滤的", {}),
        (
            "{engine}和{engine2}查询性能差多少，选哪个做OLAP",
            {
                "engine": ["ClickHouse", "Doris", "StarRocks"],
                "engine2": ["Presto", "Impala", "Trino", "Hive"],
            },
        ),
        ("帮我看下这个报错：{err}，{task}是{time}开始挂的", {"err": ERROR, "task": TASK, "time": TIME}),
        ("补数的时候怎么一次补{n}天的分区", {"n": ["7", "30", "三", "十", "90"]}),
        ("{table}的字段注释在哪里维护", {"table": TABLE}),
        ("怎么给{table}加一个数据质量监控，异常了发告警", {"table": TABLE}),
        ("血缘图里为什么看不到{table}的下游？", {"table": TABLE}),
        ("{store}集群磁盘快满了，历史数据怎么清理", {"store": STORE}),
        ("数据开发平台上SQL写完怎么发布上线", {}),
        ("{layer}层的表命名规范是什么", {"layer": LAYER}),
        ("指标平台里新建一个派生指标要填哪些东西", {}),
        ("{engine}执行计划怎么看，哪一步最慢", {"engine": ENGINE}),
        ("hive表数据被误删了能恢复吗，{time}删的", {"time": TIME}),
        (
            "数据资产目录里的{attr}是谁填的，准吗",
            {"attr": ["负责人", "敏感等级", "更新频率", "业务描述", "owner"]},
        ),
        (
            "维表{table}更新了，历史事实表要不要重算",
            {"table": ["dim_product", "dim_user", "dim_shop", "dim_city"]},
        ),
        ("{task}的告警太多了，能不能只在失败时通知我", {"task": TASK}),
        ("Kafka topic的数据怎么落到Hive表里", {}),
        ("为什么{engine}查{table}会扫全表，分区没生效吗", {"engine": ENGINE, "table": TABLE}),
        (
            "数据脱敏规则在哪配置，{field}要打码",
            {"field": ["手机号", "身份证号", "银行卡号", "邮箱", "住址"]},
        ),
        (
            "{tool}的worker挂了，任务会自动漂移吗",
            {"tool": ["DolphinScheduler", "Airflow", "Azkaban", "调度平台"]},
        ),
        ("sql查询报 {err} 是什么原因", {"err": ERROR}),
        ("{role}问{table}的数据是几点产出的，去哪看", {"role": ROLE, "table": TABLE}),
        ("{tool}任务重跑会不会导致{table}数据重复", {"tool": TOOL, "table": TABLE}),
        ("{engine}的资源队列怎么申请扩容", {"engine": ENGINE}),
        (
            "数据清洗的时候{dirty}一般怎么处理",
            {"dirty": ["空值", "重复数据", "异常值", "脏数据", "乱码", "格式不统一的日期"]},
        ),
        ("新业务的数据接入{step}是怎样的", {"step": ["流程", "规范", "审批流程", "步骤", "标准"]}),
    ],
    CHAT: [
        ("{greet}", {"greet": GREET}),
        ("{greet}，{you}", {"greet": GREET, "you": YOU}),
        ("你是谁？", {}),
        ("{you}叫什么名字呀", {"you": ["你", "这个机器人", "助手", "你们这个AI"]}),
        ("你是真人还是机器人", {}),
        ("你能做些什么？", {}),
        ("{thank}，{praise}", {"thank": THANK, "praise": PRAISE}),
        ("{you}，{thank}", {"thank": THANK, "you": YOU}),
        ("好的，明白了，{thank}", {"thank": THANK}),
        ("{bye}", {"bye": BYE}),
        ("今天{feel}啊", {"feel": FEEL}),
        ("我{feel}，陪我聊聊天吧", {"feel": FEEL}),
        ("{praise}！", {"praise": PRAISE}),
        ("你回答得不对，再想想", {}),
        ("你怎么这么笨啊", {}),
        ("讲个笑话吧", {}),
        ("你有情绪吗", {}),
        ("你平时喜欢干什么", {}),
        ("{you}今天过得怎么样", {"you": YOU}),
        ("收到，辛苦了", {}),
        ("哈哈哈哈{laugh}", {"laugh": ["", "笑死我了", "太逗了", "有意思", "你真幽默"]}),
        ("嗯嗯", {}),
        ("你是哪家公司开发的", {}),
        ("我们可以做朋友吗", {}),
        ("{greet}，我是新来的，以后请多关照", {"greet": GREET}),
        ("能不能说话温柔一点", {}),
        ("你会不会累啊", {}),
        ("晚安，{bye}", {"bye": BYE}),
        ("刚才那个回答挺好的，{thank}", {"thank": THANK}),
        ("我想跟你聊点别的，可以吗", {}),
        ("你几岁了", {}),
        ("你听得懂{lang}吗", {"lang": ["英文", "粤语", "四川话", "English", "日语"]}),
        ("没事了，{bye}", {"bye": BYE}),
        ("你记得我是谁吗", {}),
        ("{feel}的时候你一般会说什么安慰人", {"feel": FEEL}),
        ("今天周五，终于要放假啦", {}),
        ("你好呀，第一次用这个助手，有点紧张哈哈", {}),
        ("你在忙吗？我就是随便问问", {}),
        ("加班到现在，{you}你还在线啊", {"you": YOU}),
        ("不好意思刚才打错字了", {}),
        ("你比上个版本聪明多了", {}),
        ("{you}，你能帮我做点什么", {"you": YOU}),
        ("{greet}，今天{feel}", {"greet": GREET, "feel": FEEL}),
        ("跟{you}聊天真{adj}", {"you": YOU, "adj": ["开心", "有意思", "轻松", "舒服", "解压"]}),
        ("我叫{name}，你呢？", {"name": ["小王", "阿杰", "Lily", "张伟", "老李", "Tom"]}),
        ("你喜欢{thing}吗", {"thing": ["听音乐", "下雨天", "夏天", "看电影", "吃火锅", "小动物"]}),
        ("你能陪我{act}吗", {"act": ["聊会天", "说说话", "玩个游戏", "聊到睡着", "解解闷"]}),
        ("{bye}，{thank}", {"bye": BYE, "thank": THANK}),
        ("{greet}！{you}最近怎么样", {"greet": GREET, "you": YOU}),
        ("你觉得我{adj}吗", {"adj": ["很笨", "问题太多", "很啰嗦", "挺聪明", "太着急了"]}),
        ("{praise}，以后还找你", {"praise": PRAISE}),
    ],
    OTHER: [
        ("{city}明天天气怎么样？", {"city": CITY}),
        ("{city}有什么好玩的地方", {"city": CITY}),
        ("{dish}怎么做好吃", {"dish": DISH}),
        ("{food}热量高吗，减肥能吃吗", {"food": FOOD}),
        ("{team}昨晚比赛谁赢了", {"team": TEAM}),
        ("推荐几部好看的{genre}电影", {"genre": GENRE}),
        ("{country}的首都是哪里", {"country": COUNTRY}),
        ("帮我算一下{a}乘以{b}等于多少", {"a": NUM, "b": NUM}),
        ("今年{holiday}放几天假", {"holiday": HOLIDAY}),
        ("{symptom}了吃什么药好得快", {"symptom": SYMPTOM}),
        ("{phone}和{phone2}哪个拍照更好", {"phone": PHONE[:3], "phone2": PHONE[2:]}),
        ("{pet}不吃东西怎么办", {"pet": PET}),
        ("{subject}怎么复习效率高", {"subject": SUBJECT}),
        (
            "{app}怎么{action}",
            {"app": ["Photoshop", "PS", "美图秀秀", "剪映"], "action": ["抠图", "去水印", "调色", "加字幕"]},
        ),
        ("周末想带孩子去{city}玩两天，预算不多，有没有推荐的路线和住的地方？", {"city": CITY}),
        ("高铁票怎么退，手续费多少", {}),
        ("租房签合同要注意什么", {}),
        ("李白写过哪些有名的诗", {}),
        ("世界上最高的山是哪座", {}),
        ("{plant}怎么养才不会死", {"plant": PLANT}),
        ("iPhone怎么截长图", {}),
        ("信用卡逾期一天会影响征信吗", {}),
        ("孩子不爱写作业怎么办", {}),
        ("{city}到{city2}坐飞机要多久", {"city": CITY[:5], "city2": CITY[5:]}),
        ("Word怎么自动生成目录", {}),
        ("怎么做{dish}不粘锅", {"dish": DISH}),
        ("跑步膝盖疼是怎么回事", {}),
        ("{app}老是闪退怎么解决", {"app": APP}),
        ("买基金和买{asset}哪个风险小", {"asset": ["股票", "黄金", "国债", "理财", "比特币"]}),
        ("最近有什么好听的歌推荐吗", {}),
        ("宝宝{n}个月可以吃辅食了吗", {"n": ["四", "五", "6", "七", "8"]}),
        ("{team}的主教练是谁", {"team": TEAM}),
        ("恐龙是怎么灭绝的", {}),
        ("CSS怎么让一个div水平垂直居中", {}),
        ("驾照科目二倒车入库有什么技巧", {}),
        ("{city}的房价现在多少一平", {"city": CITY}),
        ("怎么写一封辞职信比较得体", {}),
        ("地球到月球有多远", {}),
        ("家里路由器网速很慢怎么办", {}),
        ("{symptom}能喝咖啡吗", {"symptom": SYMPTOM}),
        ("中秋节为什么要吃月饼", {}),
        ("想学吉他，自学要多久能弹唱", {}),
        ("{country}旅游签证好办吗，要准备哪些材料", {"country": COUNTRY}),
        ("帮我写一首关于{season}的诗", {"season": ["春天", "秋天", "下雪", "大海", "月亮"]}),
        ("电动车电池冬天掉电快正常吗", {}),
        ("{food}放冰箱能放几天", {"food": FOOD}),
        ("{city}有哪些必吃的小吃", {"city": CITY}),
        ("{holiday}去{city}人多吗", {"holiday": HOLIDAY, "city": CITY}),
        ("{pet}多大可以打疫苗", {"pet": PET[:4]}),
        ("{genre}小说有什么推荐的", {"genre": GENRE}),
        ("{phone}的电池能用几年", {"phone": PHONE}),
    ],
}

# Free-form questions: each is its own template (varied length, punctuation, typos, slang).
FREE = {
    DP: [
        "hive表的数据怎么导出成csv给业务",
        "我们的数据中台支持哪些数据源接入？",
        "急！！凌晨的调度全挂了，谁能看下",
        "Spark shuffle 太大 导致任务慢 怎么调参数",
        "想问下数据平台的API鉴权是用token还是AK/SK",
        "ads层报表延迟了两个小时，上游哪个任务出问题了？",
        "怎么看一个任务的运行日志",
        "Flink checkpoint 一直失败是咋回事",
        "拉链表怎么做增量更新",
        "新建数据源连接测试不通过",
        "datax 同步 mysql 到 hive 中文乱码",
        "数据地图里怎么按字段名搜表",
        "埋点数据从上报到入仓要多久",
        "离线任务的优先级可以调整吗",
        "hive metastore 连不上了",
        "表的生命周期设置成多少天合适",
        "帮忙看看这个sql为啥跑不出来：select * from ods_user_log where dt=today",
        "用户明细表里有重复数据，去重应该在哪一层做",
        "数据权限是到表级还是到字段级",
        "kafka 分区数要设多少",
        "血源关系是自动解析的还是手工维护的",
        "我需要一个近一年的订单宽表，能找数据组帮忙开发吗",
        "请问UDF怎么注册到hive里",
        "调度平台上的任务能不能批量暂停",
    ],
    CHAT: [
        "早",
        "在不在",
        "谢谢你啊，今天帮了我好多次",
        "你好，请问怎么称呼你",
        "哈喽哈喽",
        "我今天升职了，开心！",
        "好的好的",
        "ok 谢了",
        "你会一直在这吗",
        "晚上好呀，还没下班吗",
        "你说话挺有意思的",
        "抱歉，刚刚语气不太好",
        "给我打打气吧，明天要答辩了",
        "你喜欢猫还是狗",
        "没什么问题了，谢谢",
        "你好啊朋友",
        "嗯，我懂了",
        "你是chatgpt吗",
        "哈哈你真可爱",
        "聊聊天可以吗",
    ],
    OTHER: [
        "附近有什么好吃的火锅店",
        "怎么才能快速入睡",
        "明天要下雨吗",
        "1公里等于多少英里",
        "推荐一本适合睡前看的小说",
        "手机屏幕碎了换一个多少钱",
        "怎么煮出溏心蛋",
        "今年的诺贝尔文学奖给谁了",
        "奥运会多少年举办一次",
        "猫为什么喜欢踩奶",
        "帮我翻译一下 good morning",
        "新房装修完多久能入住",
        "牙龈出血是缺什么维生素",
        "考公务员需要什么条件",
        "怎么给微信换个头像",
        "黄山和泰山哪个更值得去",
        "番茄是水果还是蔬菜",
        "高考志愿怎么填比较稳",
        "车险一年大概多少钱",
        "为什么天空是蓝色的",
    ],
}

# Typos and colloquial spellings seen in real chat logs; applied to a fraction of generated rows.
TYPOS = {
    "数据": "数剧",
    "清洗": "清晰",
    "调度": "调渡",
    "权限": "全限",
    "血缘": "血源",
    "怎么": "咋",
    "什么": "啥",
    "报错": "爆错",
    "同步": "同不",
    "推荐": "推存",
    "已经": "以经",
    "的": "得",
    "在": "再",
}
PREFIX = ["请问", "请问一下，", "那个，", "老师好，", "想问下", "急，", "hello，", "打扰一下，"]


def perturb(text: str, label: str, rng: random.Random) -> str:
    """Realistic noise: a typo, a polite prefix, dropped or ASCII punctuation, or case changes."""
    r = rng.random()
    if r < 0.15:
        hits = [k for k in TYPOS if k in text]
        if hits:
            k = rng.choice(hits)
            return text.replace(k, TYPOS[k], 1)
    elif r < 0.27 and label != CHAT:  # "请问你好" is not how anyone greets
        return rng.choice(PREFIX) + text
    elif r < 0.37:
        return text.rstrip("？?！!。").replace("？", "?").replace("，", ",")
    elif r < 0.42:
        return text.lower()
    return text


def expand(pattern: str, slots: dict[str, list[str]], rng: random.Random) -> list[str]:
    """Up to PER_TEMPLATE distinct fillings of one template."""
    names = list(slots)
    combos = list(itertools.product(*(slots[n] for n in names))) if names else [()]
    rng.shuffle(combos)
    out: list[str] = []
    for combo in combos:
        text = pattern.format(**dict(zip(names, combo)))
        if text not in out:
            out.append(text)
        if len(out) == PER_TEMPLATE:
            break
    return out


def build() -> tuple[list[dict], list[dict]]:
    """(train rows, test rows); each row is {text, label, template}; no template is in both."""
    rng = random.Random(SEED)
    train, test, seen = [], [], set()
    for label in LABELS:
        short = {DP: "dp", CHAT: "chat", OTHER: "other"}[label]
        templates = [(f"{short}-t{i:02d}", p, s) for i, (p, s) in enumerate(TEMPLATES[label])]
        templates += [(f"{short}-f{i:02d}", t, {}) for i, t in enumerate(FREE[label])]
        order = list(range(len(templates)))
        rng.shuffle(order)
        held_out = {templates[i][0] for i in order[::TEST_EVERY]}
        for tid, pattern, slots in templates:
            for text in expand(pattern, slots, rng):
                text = perturb(text, label, rng) if slots else text
                if text in seen:  # perturbation can collide; never the same text twice
                    continue
                seen.add(text)
                (test if tid in held_out else train).append({"text": text, "label": label, "template": tid})
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    train, test = build()
    write(train, OUT / "questions_train.jsonl")
    write(test, OUT / "questions_test.jsonl")
    for name, rows in (("train", train), ("test", test)):
        counts = {lbl: sum(r["label"] == lbl for r in rows) for lbl in LABELS}
        print(f"{name}: {len(rows)} rows {counts}")


if __name__ == "__main__":
    main()
