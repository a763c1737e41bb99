// Compile-time stubs of the Renode peripheral API surface (Antmicro.Renode.*), written by Arbor
// from the surface facts in API-SURFACE.md. They let mcs type-check a generated model without
// Renode: declarations match Renode's names and signatures; bodies do the least that type-checks.
// C# 7 subset (Mono 6.8 mcs).
using System;
using System.Collections.Generic;

namespace Antmicro.Renode.Core
{
    public interface IEmulationElement
    {
    }

    public interface IMachine : IEmulationElement
    {
    }

    public class Machine : IMachine
    {
    }

    public interface IGPIO
    {
        bool IsSet { get; }
        void Set(bool value);
        void Toggle();
    }

    public sealed class GPIO : IGPIO
    {
        public bool IsSet { get { return state; } }
        public void Set(bool value) { state = value; }
        public void Toggle() { state = !state; }
        private bool state;
    }

    public static class GPIOExtensions
    {
        public static void Set(this IGPIO gpio) { gpio.Set(true); }
        public static void Unset(this IGPIO gpio) { gpio.Set(false); }
        public static void Blink(this IGPIO gpio) { gpio.Set(true); gpio.Set(false); }
    }
}

namespace Antmicro.Renode.Peripherals
{
    using Antmicro.Renode.Core;
    using Antmicro.Renode.Core.Structure.Registers;
    using Antmicro.Renode.Peripherals.Bus;

    public interface IPeripheral : IEmulationElement
    {
        void Reset();
    }

    public interface IKnownSize : IBusPeripheral
    {
        long Size { get; }
    }

    [AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
    public sealed class DefaultInterruptAttribute : Attribute
    {
    }

    public abstract class BasicDoubleWordPeripheral : IDoubleWordPeripheral,
        IProvidesRegisterCollection<DoubleWordRegisterCollection>
    {
        protected BasicDoubleWordPeripheral(IMachine machine)
        {
            this.machine = machine;
            RegistersCollection = new DoubleWordRegisterCollection(this);
        }

        public virtual void Reset() { RegistersCollection.Reset(); }
        public virtual uint ReadDoubleWord(long offset) { return RegistersCollection.Read(offset); }
        public virtual void WriteDoubleWord(long offset, uint value) { RegistersCollection.Write(offset, value); }
        public DoubleWordRegisterCollection RegistersCollection { get; private set; }

        protected readonly IMachine machine;
    }

    public static class BasicDoubleWordPeripheralExtensions
    {
        public static DoubleWordRegister Define(this Enum o,
            IProvidesRegisterCollection<DoubleWordRegisterCollection> p, uint resetValue = 0,
            bool softResettable = true, string name = "")
        {
            return p.RegistersCollection.DefineRegister(Convert.ToInt64(o), resetValue, softResettable);
        }

        public static void DefineMany(this Enum o,
            IProvidesRegisterCollection<DoubleWordRegisterCollection> p, uint count,
            Action<DoubleWordRegister, int> setup, uint stepInBytes = 4, uint resetValue = 0,
            bool softResettable = true, string name = "")
        {
            for(var i = 0; i < count; i++)
            {
                var offset = Convert.ToInt64(o) + i * stepInBytes;
                setup(p.RegistersCollection.DefineRegister(offset, resetValue, softResettable), i);
            }
        }
    }
}

namespace Antmicro.Renode.Peripherals.Bus
{
    public interface IBusPeripheral : IPeripheral
    {
    }

    public interface IBytePeripheral : IBusPeripheral
    {
        byte ReadByte(long offset);
        void WriteByte(long offset, byte value);
    }

    public interface IWordPeripheral : IBusPeripheral
    {
        ushort ReadWord(long offset);
        void WriteWord(long offset, ushort value);
    }

    public interface IDoubleWordPeripheral : IBusPeripheral
    {
        uint ReadDoubleWord(long offset);
        void WriteDoubleWord(long offset, uint value);
    }

    [Flags]
    public enum AllowedTranslation
    {
        ByteToWord = 1,
        ByteToDoubleWord = 2,
        WordToDoubleWord = 16,
        DoubleWordToByte = 64,
        DoubleWordToWord = 128
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AllowedTranslationsAttribute : Attribute
    {
        public AllowedTranslationsAttribute(AllowedTranslation allowedTranslations)
        {
            AllowedTranslations = allowedTranslations;
        }

        public AllowedTranslation AllowedTranslations { get; private set; }
    }
}

namespace Antmicro.Renode.Core.Structure.Registers
{
    using Antmicro.Renode.Peripherals;

    [Flags]
    public enum FieldMode
    {
        Read = 1,
        Write = 2,
        Set = 4,
        Toggle = 8,
        WriteOneToClear = 16,
        WriteZeroToClear = 32,
        ReadToClear = 64,
        WriteZeroToSet = 128,
        WriteZeroToToggle = 256,
        ReadToSet = 2048,
        WriteToClear = 4096,
        WriteToSet = 8192
    }

    public interface IRegisterField<T>
    {
        T Value { get; set; }
        int Width { get; }
    }

    public interface IFlagRegisterField : IRegisterField<bool>
    {
    }

    public interface IValueRegisterField : IRegisterField<ulong>
    {
    }

    public interface IEnumRegisterField<T> : IRegisterField<T> where T : struct, IConvertible
    {
    }

    internal sealed class StubField<T> : IFlagRegisterField, IValueRegisterField, IEnumRegisterField<T>
        where T : struct, IConvertible
    {
        public StubField(int width) { Width = width; }
        public T Value { get; set; }
        public int Width { get; private set; }
        bool IRegisterField<bool>.Value { get; set; }
        ulong IRegisterField<ulong>.Value { get; set; }
    }

    public abstract class PeripheralRegister
    {
        protected PeripheralRegister(IPeripheral parent, ulong resetValue, bool softResettable)
        {
            Parent = parent;
            ResetValue = resetValue;
            SoftResettable = softResettable;
        }

        public IPeripheral Parent { get; private set; }
        public ulong ResetValue { get; private set; }
        public bool SoftResettable { get; private set; }
    }

    public sealed class DoubleWordRegister : PeripheralRegister
    {
        public DoubleWordRegister(IPeripheral parent, ulong resetValue = 0, bool softResettable = true)
            : base(parent, resetValue, softResettable)
        {
        }

        public DoubleWordRegister WithReadCallback(Action<uint, uint> readCallback) { return this; }
        public DoubleWordRegister WithWriteCallback(Action<uint, uint> writeCallback) { return this; }
        public DoubleWordRegister WithChangeCallback(Action<uint, uint> changeCallback) { return this; }
    }

    public interface IRegisterCollection
    {
        void Reset();
    }

    public interface IProvidesRegisterCollection<T> where T : IRegisterCollection
    {
        T RegistersCollection { get; }
    }

    public sealed class DoubleWordRegisterCollection : IRegisterCollection
    {
        public DoubleWordRegisterCollection(IPeripheral parent, IDictionary<long, DoubleWordRegister> map = null)
        {
            this.parent = parent;
            registers = map == null ? new Dictionary<long, DoubleWordRegister>() : new Dictionary<long, DoubleWordRegister>(map);
        }

        public uint Read(long offset) { uint value; TryRead(offset, out value); return value; }
        public void Write(long offset, uint value) { TryWrite(offset, value); }
        public bool TryRead(long offset, out uint result) { result = 0; return registers.ContainsKey(offset); }
        public bool TryWrite(long offset, uint value) { return registers.ContainsKey(offset); }
        public void Reset() { }

        public DoubleWordRegister DefineRegister(long offset, uint resetValue = 0, bool softResettable = true)
        {
            var register = new DoubleWordRegister(parent, resetValue, softResettable);
            registers.Add(offset, register);
            return register;
        }

        private readonly IPeripheral parent;
        private readonly Dictionary<long, DoubleWordRegister> registers;
    }

    public static class PeripheralRegisterExtensions
    {
        public static T WithFlag<T>(this T register, int position, out IFlagRegisterField flag,
            FieldMode mode = FieldMode.Read | FieldMode.Write, Action<bool, bool> readCallback = null,
            Action<bool, bool> writeCallback = null, Action<bool, bool> changeCallback = null,
            Func<bool, bool> valueProviderCallback = null, Action<bool, bool> shadowReloadCallback = null,
            bool softResettable = true, string name = null) where T : PeripheralRegister
        {
            flag = new StubField<int>(1);
            return register;
        }

        public static T WithFlag<T>(this T register, int position,
            FieldMode mode = FieldMode.Read | FieldMode.Write, Action<bool, bool> readCallback = null,
            Action<bool, bool> writeCallback = null, Action<bool, bool> changeCallback = null,
            Func<bool, bool> valueProviderCallback = null, Action<bool, bool> shadowReloadCallback = null,
            bool softResettable = true, string name = null) where T : PeripheralRegister
        {
            return register;
        }

        public static T WithValueField<T>(this T register, int position, int width,
            out IValueRegisterField field, FieldMode mode = FieldMode.Read | FieldMode.Write,
            Action<ulong, ulong> readCallback = null, Action<ulong, ulong> writeCallback = null,
            Action<ulong, ulong> changeCallback = null, Func<ulong, ulong> valueProviderCallback = null,
            Action<ulong, ulong> shadowReloadCallback = null, bool softResettable = true,
            string name = null) where T : PeripheralRegister
        {
            field = new StubField<int>(width);
            return register;
        }

        public static T WithValueField<T>(this T register, int position, int width,
            FieldMode mode = FieldMode.Read | FieldMode.Write,
            Action<ulong, ulong> readCallback = null, Action<ulong, ulong> writeCallback = null,
            Action<ulong, ulong> changeCallback = null, Func<ulong, ulong> valueProviderCallback = null,
            Action<ulong, ulong> shadowReloadCallback = null, bool softResettable = true,
            string name = null) where T : PeripheralRegister
        {
            return register;
        }

        public static R WithEnumField<R, TEnum>(this R register, int position, int width,
            out IEnumRegisterField<TEnum> field, FieldMode mode = FieldMode.Read | FieldMode.Write,
            Action<TEnum, TEnum> readCallback = null, Action<TEnum, TEnum> writeCallback = null,
            Action<TEnum, TEnum> changeCallback = null, Func<TEnum, TEnum> valueProviderCallback = null,
            Action<TEnum, TEnum> shadowReloadCallback = null, bool softResettable = true,
            string name = null) where R : PeripheralRegister where TEnum : struct, IConvertible
        {
            field = new StubField<TEnum>(width);
            return register;
        }

        public static R WithEnumField<R, TEnum>(this R register, int position, int width,
            FieldMode mode = FieldMode.Read | FieldMode.Write,
            Action<TEnum, TEnum> readCallback = null, Action<TEnum, TEnum> writeCallback = null,
            Action<TEnum, TEnum> changeCallback = null, Func<TEnum, TEnum> valueProviderCallback = null,
            Action<TEnum, TEnum> shadowReloadCallback = null, bool softResettable = true,
            string name = null) where R : PeripheralRegister where TEnum : struct, IConvertible
        {
            return register;
        }

        public static T WithTag<T>(this T register, string name, int position, int width, bool silent = false)
            where T : PeripheralRegister
        {
            return register;
        }

        public static T WithTaggedFlag<T>(this T register, string name, int position, bool silent = false)
            where T : PeripheralRegister
        {
            return register;
        }

        public static T WithReservedBits<T>(this T register, int position, int width, uint? allowedValue = null,
            bool silent = false) where T : PeripheralRegister
        {
            return register;
        }

        public static T WithIgnoredBits<T>(this T register, int position, int width) where T : PeripheralRegister
        {
            return register;
        }
    }
}

namespace Antmicro.Renode.Logging
{
    using Antmicro.Renode.Core;

    public sealed class LogLevel
    {
        private LogLevel(string name) { Name = name; }

        public string Name { get; private set; }

        public static readonly LogLevel Noisy = new LogLevel("Noisy");
        public static readonly LogLevel Debug = new LogLevel("Debug");
        public static readonly LogLevel Info = new LogLevel("Info");
        public static readonly LogLevel Warning = new LogLevel("Warning");
        public static readonly LogLevel Error = new LogLevel("Error");
    }

    public static class LoggingExtensions
    {
        public static void Log(this IEmulationElement e, LogLevel type, string message, params object[] args) { }
        public static void DebugLog(this IEmulationElement e, string message, params object[] args) { }
        public static void InfoLog(this IEmulationElement e, string message, params object[] args) { }
        public static void WarningLog(this IEmulationElement e, string message, params object[] args) { }
        public static void ErrorLog(this IEmulationElement e, string message, params object[] args) { }
    }
}
