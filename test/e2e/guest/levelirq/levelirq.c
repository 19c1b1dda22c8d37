// SPDX-License-Identifier: GPL-2.0
/*
 * levelirq - a tiny in-guest consumer of one GPIO line interrupt, used by gpio-fabric's
 * end-to-end tests to observe interrupt delivery (level and edge) from inside a real guest.
 *
 * Load with the chip's label (the gpio-virtio driver names its chip after the virtio
 * device, e.g. "virtio0"; see `gpiodetect`) and a line offset:
 *
 *   insmod levelirq.ko chip_label=virtio0 line=3 trigger=high
 *
 * It requests the line as an input, maps it to an interrupt with gpiod_to_irq() and
 * requests a threaded, oneshot handler with the chosen trigger (high, low, rising,
 * falling, both). Results are read-only module parameters under
 * /sys/module/levelirq/parameters/: `count` (handler runs), `irq` (the Linux irq
 * number, -1 while idle) and `level` (the line value read in the last handler run,
 * -1 before the first run or when read_level=0).
 *
 * Level interrupts fire again as long as the level holds: the gpio-virtio irq chip masks
 * the line while the threaded handler runs (IRQF_ONESHOT) and unmasking re-queues the
 * eventq buffer, so the device answers it again at once while the line is still active.
 * The handler sleeps delay_ms (default 20 ms) per run, so while a level holds `count`
 * grows at a bounded rate (at most about 1000/delay_ms per second) and it stops growing
 * once the level drops.
 *
 * Loaded without chip_label the module stays idle (count 0, irq -1): the guest's /init
 * loads it that way at boot; tests rmmod it and insmod it again with parameters.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/string.h>
#include <linux/delay.h>
#include <linux/interrupt.h>
#include <linux/gpio/consumer.h>
#include <linux/gpio/driver.h>
#include <linux/gpio/machine.h>

static char *chip_label = "";
module_param(chip_label, charp, 0444);
MODULE_PARM_DESC(chip_label, "label of the GPIO chip (e.g. virtio0); empty = stay idle");

static unsigned int line;
module_param(line, uint, 0444);
MODULE_PARM_DESC(line, "line offset on the chip");

static char *trigger = "high";
module_param(trigger, charp, 0444);
MODULE_PARM_DESC(trigger, "high | low | rising | falling | both");

static unsigned int delay_ms = 20;
module_param(delay_ms, uint, 0444);
MODULE_PARM_DESC(delay_ms, "sleep per handler run, bounds the re-fire rate of a held level");

static bool read_level = true;
module_param(read_level, bool, 0444);
MODULE_PARM_DESC(read_level, "read the line value in each handler run (one GET_VALUE)");

static unsigned int count;
module_param(count, uint, 0444);
MODULE_PARM_DESC(count, "number of handler runs so far (read-only)");

static int irq = -1;
module_param(irq, int, 0444);
MODULE_PARM_DESC(irq, "Linux irq number of the line, -1 while idle (read-only)");

static int level = -1;
module_param(level, int, 0444);
MODULE_PARM_DESC(level, "line value read in the last handler run, -1 if none (read-only)");

static struct gpio_device *gdev;
static struct gpio_desc *desc;

static unsigned long parse_trigger(const char *t)
{
	if (!strcmp(t, "high"))
		return IRQF_TRIGGER_HIGH;
	if (!strcmp(t, "low"))
		return IRQF_TRIGGER_LOW;
	if (!strcmp(t, "rising"))
		return IRQF_TRIGGER_RISING;
	if (!strcmp(t, "falling"))
		return IRQF_TRIGGER_FALLING;
	if (!strcmp(t, "both"))
		return IRQF_TRIGGER_RISING | IRQF_TRIGGER_FALLING;
	return 0;
}

/* Runs in the irq thread with the line masked (IRQF_ONESHOT); one run at a time. */
static irqreturn_t levelirq_thread(int irq_no, void *data)
{
	if (read_level)
		WRITE_ONCE(level, gpiod_get_value_cansleep(desc));
	WRITE_ONCE(count, READ_ONCE(count) + 1);
	if (delay_ms)
		msleep(delay_ms);
	return IRQ_HANDLED;
}

static void levelirq_release(void)
{
	if (irq >= 0) {
		free_irq(irq, &count);
		irq = -1;
	}
	if (!IS_ERR_OR_NULL(desc)) {
		gpiochip_free_own_desc(desc);
		desc = NULL;
	}
	if (gdev) {
		gpio_device_put(gdev);
		gdev = NULL;
	}
}

static int __init levelirq_init(void)
{
	struct gpio_chip *gc;
	unsigned long flags;
	int ret, virq;

	if (!chip_label || !*chip_label) {
		pr_info("levelirq: idle (no chip_label)\n");
		return 0;
	}
	flags = parse_trigger(trigger ? trigger : "");
	if (!flags) {
		pr_err("levelirq: unknown trigger '%s'\n", trigger ? trigger : "");
		return -EINVAL;
	}
	gdev = gpio_device_find_by_label(chip_label);
	if (!gdev) {
		pr_err("levelirq: no GPIO chip labelled '%s'\n", chip_label);
		return -ENODEV;
	}
	gc = gpio_device_get_chip(gdev);
	if (!gc || line >= gc->ngpio) {
		pr_err("levelirq: line %u out of range on '%s'\n", line, chip_label);
		ret = -EINVAL;
		goto fail;
	}
	desc = gpiochip_request_own_desc(gc, line, "levelirq", GPIO_LOOKUP_FLAGS_DEFAULT,
					 GPIOD_IN);
	if (IS_ERR(desc)) {
		ret = PTR_ERR(desc);
		pr_err("levelirq: cannot request line %u: %d\n", line, ret);
		goto fail;
	}
	ret = gpiod_to_irq(desc);
	if (ret < 0) {
		pr_err("levelirq: line %u has no irq: %d\n", line, ret);
		goto fail;
	}
	/* a NULL primary handler needs IRQF_ONESHOT: the line stays masked until the thread returns */
	virq = ret;
	ret = request_threaded_irq(virq, NULL, levelirq_thread, flags | IRQF_ONESHOT, "levelirq",
				   &count);
	if (ret) {
		pr_err("levelirq: request_threaded_irq failed: %d\n", ret);
		goto fail;
	}
	irq = virq;
	pr_info("levelirq: %s line %u irq %d trigger %s\n", chip_label, line, irq, trigger);
	return 0;
fail:
	levelirq_release();
	return ret;
}

static void __exit levelirq_exit(void)
{
	levelirq_release();
}

module_init(levelirq_init);
module_exit(levelirq_exit);
MODULE_DESCRIPTION("gpio-fabric e2e: count interrupts of one GPIO line");
MODULE_LICENSE("GPL");
